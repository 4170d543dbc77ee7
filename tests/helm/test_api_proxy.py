"""The API's trusted proxies: the chart passes `api.forwardedAllowIps` to `machine-health serve`."""

from __future__ import annotations

from tests.support.helm import one, random_secrets, set_args, template, template_error


def _api_args(*extra: str) -> list[str]:
    docs = template(*set_args(random_secrets()), *extra)
    return one(docs, "Deployment", "-api")["spec"]["template"]["spec"]["containers"][0]["args"]


def _option(args: list[str], name: str) -> str:
    assert args.count(name) == 1, args
    return args[args.index(name) + 1]


def test_the_api_trusts_x_forwarded_for_from_the_k3s_pod_range_by_default() -> None:
    args = _api_args()
    assert args[0] == "serve"
    assert _option(args, "--forwarded-allow-ips") == "10.42.0.0/16"


def test_the_trusted_range_is_a_value() -> None:
    args = _api_args("--set", "api.forwardedAllowIps=10.0.0.0/8\\,192.168.1.10")
    assert _option(args, "--forwarded-allow-ips") == "10.0.0.0/8,192.168.1.10"


def test_trusting_everyone_is_refused() -> None:
    error = template_error(*set_args(random_secrets()), "--set", "api.forwardedAllowIps=*")
    assert "forwardedAllowIps" in error
