"""``observe.lxderrors``: LXD's error messages classified by their exact form, and transport
failures (urllib3's text) in plain words. The messages are what LXD 5.0 and requests answered in
the lab."""

from __future__ import annotations

import pytest
import requests

from lxdgpu_reconcile.observe import lxdapi
from lxdgpu_reconcile.observe.lxderrors import NO_ANSWER_HINT, classify, explain, transport_failure

#: (message as LXD 5.0 words it, its class).
REAL_MESSAGES = [
    (
        "Failed to run: /usr/bin/lxd forkstart probe2 /var/tmp/lxflt/hosts/flt1/containers "
        "/var/tmp/lxflt/hosts/flt1/logs/probe2/lxc.conf: exit status 1",
        "idmap-delegation",
    ),
    (
        'Failed to handle idmapped storage: Failed expanding symlinks of "": lstat '
        "/var/tmp/lxflt/hosts/flt1/containers/ann-container: no such file or directory",
        "no-root-filesystem",
    ),
    ("Initialize LXC: The NVIDIA container tools couldn't be found", "nvidia-runtime"),
    ('Failed to start device "g1": Failed to detect requested GPU device', "gpu-missing"),
    (
        'Failed add validation for device "d1": Missing source path "/nonexistent" for disk "d1"',
        "disk-source-missing",
    ),
    ("Failed to start device \"n1\": Parent device 'nope0' doesn't exist", "nic-parent-missing"),
    ("Profile is currently in use", "profile-in-use"),
    (
        'Failed to create instance delete operation: Instance is busy running a "stop" operation',
        "instance-busy",
    ),
    ("Container is protected", "protected"),
    ("Instance is protected", "protected"),
    ("Image not found", "image-missing"),
    ("not authorized", "untrusted"),
]


@pytest.mark.parametrize(("message", "kind"), REAL_MESSAGES)
def test_each_known_lxd_message_is_classified_by_its_form(message: str, kind: str) -> None:
    assert classify(message) == kind
    assert explain(message)


def test_idmapped_storage_is_not_taken_for_an_idmap_delegation_problem() -> None:
    message = REAL_MESSAGES[1][0]

    assert "/etc/subuid" not in explain(message)
    assert "no root filesystem" in explain(message)


@pytest.mark.parametrize(
    "message",
    [
        "Failed to set idmap on volume",  # contains "idmap", not the forkstart form
        "image fingerprint 403aa1 is not a template",  # contains "403"
        "Profile is currently in use by something else entirely, said nobody",
        "the word GPU device alone",
        "nvidia-container-cli is a program name",
        "Instance not found",
    ],
)
def test_messages_that_only_contain_a_word_of_a_form_get_no_hint(message: str) -> None:
    assert classify(message) == "" and explain(message) == ""


URLLIB3_REFUSED = (
    "HTTPSConnectionPool(host='127.0.0.1', port=44091): Max retries exceeded with url: "
    "/1.0/instances (Caused by NewConnectionError(\"HTTPSConnection(host='127.0.0.1', "
    'port=44091): Failed to establish a new connection: [Errno 111] Connection refused"))'
)
URLLIB3_READ_TIMEOUT = (
    "HTTPSConnectionPool(host='127.0.0.1', port=44091): Read timed out. (read timeout=5.0)"
)
URLLIB3_DROPPED = (
    "('Connection aborted.', RemoteDisconnected('Remote end closed connection without response'))"
)


def test_a_refused_connection_is_told_in_plain_words() -> None:
    error = transport_failure("create instance a", URLLIB3_REFUSED, timed_out=False)

    assert error.message == (
        "create instance a: cannot reach the host at 127.0.0.1:44091: nothing accepts "
        "connections there (LXD is not running)"
    )
    assert "HTTPSConnectionPool" not in error.message and "Max retries" not in error.message
    assert error.unanswered and error.hint == NO_ANSWER_HINT


def test_a_read_timeout_and_a_dropped_connection_are_told_in_plain_words() -> None:
    timeout = transport_failure("start instance a", URLLIB3_READ_TIMEOUT, timed_out=True)
    dropped = transport_failure("create instance a", URLLIB3_DROPPED, timed_out=False)

    assert (
        timeout.message == "start instance a: the host at 127.0.0.1:44091 did not answer within 5 s"
    )
    assert dropped.message == (
        "create instance a: cannot reach the host: the host closed the connection without "
        "answering (LXD stopped or restarted)"
    )
    assert timeout.unanswered and dropped.unanswered


class _Failing:
    """A pylxd ``api`` node whose every request raises ``error``."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    def __getitem__(self, name: str) -> _Failing:
        return self

    def __getattr__(self, name: str) -> object:
        def fail(*args: object, **kwargs: object) -> object:
            raise self.error

        return fail


class _Client:
    def __init__(self, error: Exception) -> None:
        self.api = _Failing(error)


@pytest.mark.parametrize(
    ("error", "words"),
    [
        (requests.exceptions.ConnectionError(URLLIB3_REFUSED), "nothing accepts connections"),
        (requests.exceptions.ReadTimeout(URLLIB3_READ_TIMEOUT), "did not answer within 5 s"),
    ],
)
def test_the_pylxd_seam_reports_requests_failures_in_plain_words(
    error: Exception, words: str
) -> None:
    api = lxdapi.PylxdApi(_Client(error))  # type: ignore[arg-type]
    with pytest.raises(lxdapi.LxdError) as raised:
        api.create("instances", {"name": "a"}, timeout=5)

    assert words in raised.value.message and "HTTPSConnectionPool" not in raised.value.message
    assert raised.value.unanswered and raised.value.cause is error


def test_a_tls_failure_is_not_taken_for_a_host_that_stopped_answering() -> None:
    api = lxdapi.PylxdApi(_Client(requests.exceptions.SSLError("certificate verify failed")))  # type: ignore[arg-type]
    with pytest.raises(lxdapi.LxdError) as raised:
        api.create("instances", {"name": "a"}, timeout=5)

    assert not raised.value.unanswered
