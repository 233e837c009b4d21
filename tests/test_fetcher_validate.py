"""The fetcher's pure decisions: what a complete stream is, which failures retry, empty catalogs."""

from __future__ import annotations

import re

import orjson
import pytest

from catalogsync.common.config import MedipimSettings
from catalogsync.common.errors import (
    ExitCode,
    InvalidDataError,
    PermanentError,
    TransientError,
)
from catalogsync.common.lines import MAX_LINE_BYTES, LineSplitter, LongLine
from catalogsync.common.storage import ObjectInfo
from catalogsync.fetcher.stream import (
    SourceUnavailable,
    response_error,
    retry_after_seconds,
    user_agent,
)
from catalogsync.fetcher.validate import (
    EXCERPT,
    IncompleteStreamError,
    StreamAccount,
    StreamErrorLine,
    empty_catalog_action,
    shrink_problem,
)


def line(index: int, total: int, product_id: str | None = None) -> bytes:
    pid = product_id or f"M{index:09X}"
    return orjson.dumps({"meta": {"total": total, "index": index}, "result": {"id": pid}})


def fed(*lines: bytes) -> StreamAccount:
    account = StreamAccount()
    for item in lines:
        account.feed(item)
    return account


def test_complete_stream_is_counted() -> None:
    account = fed(*(line(i, 3) for i in range(3)))
    account.finish(b"")
    assert (account.records, account.total, account.last_id) == (3, 3, "M000000002")


def test_last_line_without_newline_is_accepted() -> None:
    account = fed(line(0, 2))
    account.finish(line(1, 2))
    assert account.records == 2


def test_blank_lines_are_skipped() -> None:
    account = fed(line(0, 2), b"", b"  ", line(1, 2))
    account.finish(b"\n")
    assert account.records == 2


def test_short_stream_is_incomplete_and_transient() -> None:
    account = fed(line(0, 5), line(1, 5))
    with pytest.raises(IncompleteStreamError, match="after 2 of 5 products") as caught:
        account.finish(b"")
    assert caught.value.exit_code == ExitCode.TRANSIENT
    assert caught.value.reason == "IncompleteStream"


def test_line_cut_at_the_end_is_a_truncation_not_bad_data() -> None:
    account = fed(line(0, 5))
    with pytest.raises(IncompleteStreamError, match="middle of line 2"):
        account.finish(line(1, 5)[:20])


def test_200_without_products_is_incomplete() -> None:
    with pytest.raises(IncompleteStreamError, match="204"):
        StreamAccount().finish(b"")


def test_error_line_is_a_stream_error() -> None:
    error = b'{"error":{"status":500,"code":"internal","message":"boom"}}'
    with pytest.raises(StreamErrorLine, match="boom") as caught:
        fed(line(0, 3), error)
    assert isinstance(caught.value, TransientError)
    assert caught.value.reason == "StreamError"


@pytest.mark.parametrize(
    ("bad", "problem"),
    [
        (b"{not json", "is not JSON"),
        (b"[1, 2]", "is not a JSON object"),
        (b'{"meta":{"total":3,"index":1}}', '"meta" and "result"'),
        (b'{"meta":{"total":"3","index":1},"result":{"id":"M1"}}', "integer meta.index"),
        (b'{"meta":{"total":3,"index":true},"result":{"id":"M1"}}', "integer meta.index"),
        (b'{"meta":{"total":3,"index":1},"result":{"id":7}}', "string result.id"),
        (line(2, 3), "meta.index=2 where 1"),
        (line(0, 3), "meta.index=0 where 1"),
        (line(1, 4), "meta.total=4 after 3"),
    ],
)
def test_malformed_lines_are_invalid_data(bad: bytes, problem: str) -> None:
    with pytest.raises(InvalidDataError, match=re.escape(problem)) as caught:
        fed(line(0, 3), bad)
    assert caught.value.exit_code == ExitCode.INVALID_DATA
    assert "line 2" in str(caught.value)


def test_index_beyond_total_is_invalid() -> None:
    with pytest.raises(InvalidDataError, match=r"meta\.index=1"):
        fed(line(0, 1), line(1, 1))


BLOCK = b"x" * (1 << 20)


def test_endless_line_is_refused_as_soon_as_it_passes_the_limit() -> None:
    """The same 1 MiB block over and over: the splitter must not hold the line, nor the test."""
    account, splitter = StreamAccount(), LineSplitter(keep=EXCERPT)
    for item in splitter.feed(line(0, 3) + b"\n" + b'{"meta": {"total": 3, "index": 1}, "x": "'):
        account.feed(item)
    blocks = 0
    while splitter.overflow is None and blocks <= MAX_LINE_BYTES // len(BLOCK):
        account.check_partial(splitter.overflow)
        for item in splitter.feed(BLOCK):
            account.feed(item)
        blocks += 1
    assert blocks * len(BLOCK) == MAX_LINE_BYTES  # over with the block that crossed the limit
    with pytest.raises(InvalidDataError) as caught:
        account.check_partial(splitter.overflow)
    assert caught.value.exit_code == ExitCode.INVALID_DATA
    message = str(caught.value)
    overflow = splitter.overflow
    assert overflow is not None
    assert overflow.size > MAX_LINE_BYTES
    assert f"line 2 (where meta.index 1 was due) has passed {overflow.size} bytes" in message
    assert f"line limit of {MAX_LINE_BYTES} bytes (16 MiB)" in message
    assert '{"meta": {"total": 3, "index": 1}' in message


def test_line_just_over_the_limit_is_refused_with_its_size() -> None:
    account = fed(line(0, 3))
    with pytest.raises(InvalidDataError) as caught:
        account.feed(LongLine(MAX_LINE_BYTES + 1, b'{"meta": {"total": 3, "index": 1}'))
    assert (
        f"line 2 (where meta.index 1 was due) is {MAX_LINE_BYTES + 1} bytes, over the line "
        f"limit of {MAX_LINE_BYTES} bytes" in str(caught.value)
    )
    account = fed(line(0, 3))
    account.check_partial(None)  # nothing over the limit: nothing to say
    assert account.lines == 1


def test_empty_catalog_replaces_only_an_empty_or_missing_latest() -> None:
    full = ObjectInfo("latest.ndjson", 1234)
    empty = ObjectInfo("latest.ndjson", 0)
    assert empty_catalog_action(None, publish_empty=False) == "publish"
    assert empty_catalog_action(empty, publish_empty=False) == "publish"
    assert empty_catalog_action(full, publish_empty=False) == "keep"
    assert empty_catalog_action(full, publish_empty=True) == "publish"


def settings() -> MedipimSettings:
    return MedipimSettings.model_validate(
        {"MEDIPIM_API_KEY_ID": "42", "MEDIPIM_API_KEY_SECRET": "s3cret", "MEDIPIM_URL": "http://x"}
    )


@pytest.mark.parametrize("status", [401, 403])
def test_rejected_credentials_name_the_secret_not_the_values(status: int) -> None:
    error = response_error(status, b'{"error":{}}', settings(), None)
    assert isinstance(error, PermanentError)
    assert error.reason == "InvalidCredentials"
    text = str(error)
    assert "medipim-credentials" in text
    assert "apiKeyId" in text
    assert "apiKeySecret" in text
    assert "s3cret" not in text


@pytest.mark.parametrize("status", [429, 500, 502, 503])
def test_rate_limits_and_server_errors_retry(status: int) -> None:
    error = response_error(status, b"busy", settings(), "7")
    assert isinstance(error, SourceUnavailable)
    assert error.retry_after == 7.0


@pytest.mark.parametrize(
    ("status", "reason"), [(422, "InvalidRequest"), (404, "InvalidConfiguration")]
)
def test_other_answers_are_permanent(status: int, reason: str) -> None:
    error = response_error(status, b'{"error":{"violations":[]}}', settings(), None)
    assert isinstance(error, PermanentError)
    assert error.reason == reason


def test_retry_after_forms() -> None:
    assert retry_after_seconds(None) == 0.0
    assert retry_after_seconds("2.5") == 2.5
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0
    assert retry_after_seconds("soon") == 0.0


def test_user_agent_is_descriptive() -> None:
    assert re.fullmatch(r"catalogsync/\S+ \(\+https://\S+\)", user_agent())


@pytest.mark.parametrize(
    ("published", "records", "refused"),
    [
        (25_421, 2_000, True),
        (1_000, 899, True),
        (1_000, 900, False),
        (1_000, 1_200, False),
        (None, 5, False),
        (0, 5, False),
    ],
)
def test_a_catalog_much_smaller_than_the_published_one_is_refused(
    published: int | None, records: int, refused: bool
) -> None:
    problem = shrink_problem(published, records, max_fraction=0.1)
    assert (problem is not None) == refused
    if problem is not None:
        assert f"{records} products" in problem
