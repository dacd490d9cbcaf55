"""The signature the wire tests decode against."""

from common.model.signature import Signature

SIGNATURE = Signature.model_validate({
    "inputs": [{"name": "x", "dtype": "float32", "shape": ["batch", 2]},
               {"name": "h", "dtype": "bfloat16", "shape": ["batch"]},
               {"name": "mask", "dtype": "bool", "shape": ["batch", 2], "optional": True}],
    "outputs": [{"name": "y", "dtype": "float32", "shape": ["batch"]},
                {"name": "z", "dtype": "int64", "shape": ["batch"]}],
})
