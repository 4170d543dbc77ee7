"""Settings: defaults, refusal of placeholder secrets outside dev, dev secrets kept under var/."""

from __future__ import annotations

from pathlib import Path

import pytest

from machine_health.config import Settings
from machine_health.errors import ConfigurationError

STRONG = "x" * 16 + "Q3v9-Lm2Zr8_Tp4Wn6Yk1Hd5"


def test_prod_settings_without_secrets_build_but_refuse_where_secrets_are_used() -> None:
    # The UI pod gets no secret: its settings must build. The API / reload step require them.
    settings = Settings(_env_file=None, env="prod")
    with pytest.raises(ConfigurationError, match="MH_JWT_SECRET must be set"):
        settings.require_secrets("jwt_secret", "service_token")
    with_jwt = Settings(_env_file=None, env="prod", jwt_secret=STRONG)
    assert with_jwt.require_secrets("jwt_secret") is with_jwt
    with pytest.raises(ConfigurationError, match="MH_SERVICE_TOKEN must be set"):
        with_jwt.require_secrets("jwt_secret", "service_token")
    with pytest.raises(ValueError, match="not a secret"):
        with_jwt.require_secrets("api_url")


def test_dev_requires_secrets_only_until_they_are_generated(tmp_path: Path) -> None:
    settings = Settings(_env_file=None, env="dev", var_dir=tmp_path)
    with pytest.raises(ConfigurationError, match="MH_SERVICE_TOKEN"):
        settings.require_secrets("service_token")
    settings.ensure_dev_secrets().require_secrets("jwt_secret", "service_token")


def test_ui_host_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings(_env_file=None).ui_host == "127.0.0.1"
    monkeypatch.setenv("MH_UI_HOST", "0.0.0.0")
    assert Settings(_env_file=None).ui_host == "0.0.0.0"


@pytest.mark.parametrize("placeholder", ["changeme", "secret", "short-but-not-placeholder"])
def test_prod_refuses_placeholder_or_short_secrets(placeholder: str) -> None:
    with pytest.raises(ConfigurationError, match="at least 32 characters"):
        Settings(_env_file=None, env="prod", jwt_secret=placeholder, service_token=STRONG)
    # a secret that is set is checked even in a component that does not require it
    with pytest.raises(ConfigurationError, match="MH_SERVICE_TOKEN"):
        Settings(_env_file=None, env="prod", service_token=placeholder)


def test_prod_accepts_real_secrets() -> None:
    settings = Settings(_env_file=None, env="prod", jwt_secret=STRONG, service_token=STRONG + "a")
    assert settings.jwt_secret is not None
    assert STRONG not in repr(settings)  # secrets never show in logs or reprs


def test_dev_generates_secrets_once_and_reuses_them(tmp_path: Path) -> None:
    first = Settings(_env_file=None, env="dev", var_dir=tmp_path).ensure_dev_secrets()
    second = Settings(_env_file=None, env="dev", var_dir=tmp_path).ensure_dev_secrets()
    assert first.jwt_secret is not None and second.jwt_secret is not None
    assert first.jwt_secret.get_secret_value() == second.jwt_secret.get_secret_value()
    assert len(first.jwt_secret.get_secret_value()) >= 32
    key_file = tmp_path / "secrets" / "jwt_secret"
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert first.service_token != first.jwt_secret


def test_environment_variables_with_prefix(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MH_STORE_PORT", "29999")
    monkeypatch.setenv("MH_SERVING_URLS", "http://a:1/, http://b:2")
    settings = Settings(_env_file=None, var_dir=tmp_path)
    assert settings.store_uri == "mongodb://127.0.0.1:29999/"
    assert settings.serving_urls == ["http://a:1", "http://b:2"]


def test_external_mongodb_uri_disables_the_embedded_store() -> None:
    settings = Settings(_env_file=None, mongodb_uri="mongodb://db.example:27017/")
    assert not settings.embedded_store
    assert settings.store_uri == "mongodb://db.example:27017/"


def test_as_env_round_trips(tmp_path: Path) -> None:
    settings = Settings(_env_file=None, env="test", var_dir=tmp_path, jwt_secret=STRONG,
                        service_token=STRONG, serving_urls="http://a:1,http://b:2")  # fmt: skip
    env = settings.as_env()
    assert env["MH_SERVING_URLS"] == "http://a:1,http://b:2"
    rebuilt = Settings(_env_file=None, **{k.removeprefix("MH_").lower(): v for k, v in env.items()})
    assert rebuilt.model_dump() == settings.model_dump()


def test_data_dir_defaults_to_shared_data_beside_the_checkout() -> None:
    # Tests run from the repository root, where ../shared/data exists.
    assert Settings(_env_file=None).data_dir == Path("../shared/data")
