"""Settings come from HUB_… variables and an optional dotenv file; secrets never print."""

from __future__ import annotations

import pytest

from hub.config import ConfigError, Secret, Settings


def test_environment_and_file(tmp_path, monkeypatch):
    config = tmp_path / "hub.env"
    config.write_text("HUB_PROVINCE=31\nHUB_CIVIL_CLIENT_SECRET=from-file\nHUB_BUSINESS_VARIANT=b\n")
    monkeypatch.setenv("HUB_CONFIG", str(config))
    monkeypatch.setenv("HUB_CIVIL_CLIENT_SECRET", "from-env")
    settings = Settings.from_env()
    assert settings.civil_client_secret.reveal() == "from-env"  # the environment wins over the file
    assert settings.business_variant == "B"
    assert "from-env" not in repr(settings) and "from-env" not in str(settings.describe())


def test_missing_config_file_is_an_error(monkeypatch, tmp_path):
    monkeypatch.setenv("HUB_CONFIG", str(tmp_path / "absent.env"))
    with pytest.raises(ConfigError, match="does not exist"):
        Settings.from_env()


@pytest.mark.parametrize("name, value, message", [
    ("HUB_PROVINCE", "3", "2-digit"),
    ("HUB_OFFICER_ID", "123", "12-digit"),
    ("HUB_BUSINESS_VARIANT", "C", "A or B"),
    ("HUB_POPULATION_URL", "ftp://x", "http"),
])
def test_invalid_values_name_the_variable(name, value, message):
    with pytest.raises(ConfigError, match=message) as raised:
        Settings.from_env({name: value})
    assert name.split("_", 1)[1].split("_")[0] in str(raised.value) or name in str(raised.value)


def test_secret_never_shows():
    secret = Secret("s3cr3t")
    assert "s3cr3t" not in repr(secret) and "s3cr3t" not in f"{secret}" and secret.reveal() == "s3cr3t"
