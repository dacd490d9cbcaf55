"""The stateless HTTP facade: validates predict requests and queues them for workers."""

from facade.app import Facade

__all__ = ["Facade"]
