"""The configuration: the example stays valid, and every problem names its key and line."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import pytest

from service.config import default_config_path, find_config, load_config, parse_duration
from service.errors import ConfigError
from service.model import Kind

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "config.example.yaml"


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(text=text)
    return [str(p) for p in caught.value.problems]


def test_example_is_valid_and_its_secrets_are_only_warnings(monkeypatch):
    monkeypatch.delenv("MASTODON_TOKEN", raising=False)
    monkeypatch.delenv("SMTP_PASSWORD", raising=False)
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    loaded = load_config(EXAMPLE)
    assert [a.key for a in loaded.settings.accounts] == [
        "sandbox:@you",
        "mastodon:@you@example.social",
        "bluesky:@you.bsky.social",
    ]
    assert loaded.account_ready("mastodon:@you@example.social") == ["MASTODON_TOKEN"]
    assert loaded.account_ready("sandbox:@you") == []
    assert any("MASTODON_TOKEN" in str(w) and "line" in str(w) for w in loaded.warnings)


def test_example_holds_no_inline_secret():
    for line in EXAMPLE.read_text().splitlines():
        if any(word in line for word in ("token:", "password:")) and not line.strip().startswith(
            "#"
        ):
            assert "${" in line, line


def test_every_problem_is_named_with_key_and_line():
    found = problems(
        "version: 1\n"
        "accounts:\n"
        "  - platform: myspace\n"
        "    handle: '@x'\n"
        "rules:\n"
        "  window: forever\n"
        "  count_kinds: [like, hug]\n"
        "digest:\n"
        "  timezone: Mars/Olympus\n"
        "bogus: 1\n"
    )
    joined = "\n".join(found)
    assert len(found) == 5, joined
    assert "line 3, accounts[0].platform" in joined
    assert "line 6, rules.window" in joined
    assert "line 7, rules.count_kinds[1]" in joined
    assert "line 9, digest.timezone" in joined
    assert "line 10, bogus" in joined


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("version: 1\naccounts: [\n", "not valid YAML"),
        ("- just\n- a list\n", "must hold a mapping"),
        ("accounts: []\n", "version"),
        ("version: 2\n", "version"),
        (
            "version: 1\naccounts:\n  - {platform: sandbox, handle: '@a'}\n  - {platform: sandbox, handle: '@a'}\n",
            "listed twice",
        ),
        ("version: 1\nrules: {target_keep: 150%}\n", "rules.target_keep"),
        ("version: 1\nschedule: {digest: 'every monday'}\n", "cron"),
        (
            "version: 1\naccounts:\n  - {platform: x, handle: '@a', sandbox: {seed: 1}}\n",
            "only for platform: sandbox",
        ),
    ],
)
def test_bad_files_are_refused_with_a_reason(text, expected):
    assert any(expected in p for p in problems(text))


def test_secrets_come_from_environment_then_credentials_directory(monkeypatch, tmp_path):
    text = (
        "version: 1\naccounts:\n  - platform: mastodon\n    handle: '@a@b.c'\n"
        "    credentials: {access_token: '${TOK}'}\n"
    )
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    monkeypatch.delenv("TOK", raising=False)
    (tmp_path / "TOK").write_text("from-file\n")
    loaded = load_config(text=text)
    secret = loaded.settings.accounts[0].credentials["access_token"]
    assert secret.get_secret_value() == "from-file"
    assert "from-file" not in repr(loaded.settings)
    monkeypatch.setenv("TOK", "from-env")
    assert (
        load_config(text=text).settings.accounts[0].credentials["access_token"].get_secret_value()
        == "from-env"
    )


def test_rules_defaults_and_parsing():
    settings = load_config(
        text="version: 1\nrules: {window: 90d, target_keep: 20%, protected: ['@Mum'], weights: {like: 0.5}}\n"
    ).settings
    assert settings.rules.window == timedelta(days=90)
    assert settings.rules.target_keep == pytest.approx(0.2)
    assert "@mum" in settings.rules.protected
    assert settings.rules.weights[Kind.LIKE] == 0.5
    assert settings.rules.weights[Kind.MESSAGE] == 5.0


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("30m", 1800), ("6h", 21600), ("180d", 15552000), ("2w", 1209600), (90, 90)],
)
def test_durations(value, seconds):
    assert parse_duration(value).total_seconds() == seconds


def test_config_location_follows_systemd_then_xdg(monkeypatch, tmp_path):
    monkeypatch.delenv("LOPPER_CONFIG", raising=False)
    monkeypatch.setenv("CONFIGURATION_DIRECTORY", str(tmp_path / "etc"))
    assert find_config(None) == tmp_path / "etc" / "config.yaml"
    monkeypatch.delenv("CONFIGURATION_DIRECTORY")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert default_config_path() == tmp_path / "xdg" / "lopper" / "config.yaml"
    assert find_config(tmp_path / "given.yaml") == tmp_path / "given.yaml"


def test_request_timeout_is_a_duration_within_bounds():
    base = "version: 1\naccounts:\n  - platform: mastodon\n    handle: '@me@example.social'\n"
    loaded = load_config(text=base + "    request_timeout: 20s\n")
    account = loaded.settings.accounts[0]
    assert account.request_timeout == timedelta(seconds=20)
    assert account.timeout_or(60.0) == 20.0
    assert load_config(text=base).settings.accounts[0].timeout_or(60.0) == 60.0
    for bad in ("0s", "2h", "soon"):
        found = problems(base + f"    request_timeout: {bad}\n")
        assert len(found) == 1 and "request_timeout" in found[0] and "line 5" in found[0], found


# --- every duration within a sane range --------------------------------------------------

OUT_OF_RANGE = [
    ("rules", "window", "999999999d"),
    ("rules", "window", "0s"),
    ("rules", "grace", "-1d"),
    ("rules", "grace", "999999999d"),
    ("rules", "stale_after", "-5d"),
    ("rules", "stale_after", "0"),
    ("rules", "dormant_after", "0"),
    ("rules", "half_life", "99999d"),
    ("rules", "retry_after", "999999999d"),
    ("rules", "manual_recheck_after", "-1d"),
    ("schedule", "sync_every", "999999999d"),
    ("schedule", "sync_jitter", "-1m"),
    ("schedule", "relist_every", "999999999d"),
    ("schedule", "retry_after", "99999d"),
    ("digest", "retry_after", "999999999d"),
    ("web", "link_ttl", "999999999d"),
    ("web", "link_ttl", "-1d"),
]


@pytest.mark.parametrize(("section", "key", "value"), OUT_OF_RANGE)
def test_a_duration_out_of_range_is_refused_naming_key_and_line(section, key, value):
    """Each of these passed `config check` once and crashed at run time (OverflowError), or
    judged nonsense (a negative grace, everyone dormant at once)."""
    found = problems(f"version: 1\n# a comment\n{section}:\n  {key}: {value}\n")
    assert len(found) == 1, found
    assert found[0].startswith(f"line 4, {section}.{key}: "), found
    assert re.search(r"expected (between|longer than 0s and at most) \d", found[0]), found


@pytest.mark.parametrize(
    ("where", "value"),
    [
        (
            "accounts:\n  - platform: facebook\n    handle: me\n    facebook:\n      posts_lookback",
            "-1d",
        ),
        ("accounts:\n  - platform: x\n    handle: '@me'\n    x:\n      relist_every", "99999d"),
        ("accounts:\n  - platform: x\n    handle: '@me'\n    removal_spacing", "[1s, 9999999d]"),
    ],
)
def test_account_durations_are_bounded_too(where, value):
    found = problems(f"version: 1\n{where}: {value}\n")
    assert len(found) == 1 and "between" in found[0], found
    assert found[0].startswith("line "), found


def test_the_widest_durations_in_range_load():
    loaded = load_config(
        text="version: 1\nrules: {window: 3650d, grace: 0s, stale_after: 3650d, "
        "dormant_after: 1d}\nschedule: {sync_every: 365d, lease: 1s, poll_every: 0.1s}\n"
        "web: {link_ttl: 365d}\n"
    )
    assert loaded.settings.rules.window == timedelta(days=3650)
    assert loaded.settings.web.link_ttl == timedelta(days=365)


def test_a_duration_beyond_any_calendar_is_refused_by_the_parser():
    with pytest.raises(ValueError, match="too long"):
        parse_duration("999999999d")


# --- the shape of the YAML itself ----------------------------------------------------------

BILLION_LAUGHS = (
    "version: 1\n"
    "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n"
    "b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
    "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\n"
    "d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
    "e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]\n"
    "f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]\n"
    "g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]\n"
    "h: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g]\n"
    "i: &i [*h, *h, *h, *h, *h, *h, *h, *h, *h]\n"
    "rules: {protected: *i}\n"
)


def test_aliases_that_expand_beyond_a_budget_are_refused_at_once():
    """443 bytes that would expand to 387 million values: refused before anything walks them
    (the line index and the secret resolution once did, past 4 GB)."""
    assert len(BILLION_LAUGHS.encode()) < 600
    found = problems(BILLION_LAUGHS)
    assert len(found) == 1, found
    assert "alias" in found[0] and "expand" in found[0], found
    assert found[0].startswith("line "), found


def test_a_few_aliases_are_fine():
    loaded = load_config(
        text="version: 1\nrules:\n  protected: &handles ['@ana', '@bo']\n"
        "  protected_lists: *handles\n"
    )
    assert loaded.settings.rules.protected == {"@ana", "@bo"}


def test_an_alias_that_holds_itself_is_refused():
    found = problems("version: 1\nrules:\n  protected: &me [*me]\n")
    assert len(found) == 1 and "line 3" in found[0], found


def test_nesting_beyond_any_configuration_is_refused():
    found = problems("version: 1\nrules: {protected: " + "[" * 5000 + "]" * 5000 + "}\n")
    assert len(found) == 1 and "nested" in found[0], found


def test_a_key_given_twice_is_refused_naming_both_lines():
    """Two `rules:` blocks: YAML keeps the second and silently drops the first."""
    found = problems(
        "version: 1\nrules:\n  window: 84d\nschedule:\n  sync_every: 6h\nrules:\n  window: 180d\n"
    )
    assert len(found) == 1, found
    assert "rules" in found[0] and "lines 2 and 6" in found[0], found


def test_a_key_given_twice_deeper_is_refused_naming_its_path():
    found = problems("version: 1\nrules:\n  window: 84d\n  grace: 1d\n  window: 180d\n")
    assert len(found) == 1, found
    assert "rules.window" in found[0] and "lines 3 and 5" in found[0], found


def test_merge_keys_are_not_duplicates():
    loaded = load_config(text="version: 1\nrules:\n  <<: {window: 90d}\n  <<: {grace: 1d}\n")
    assert loaded.settings.rules.window == timedelta(days=90)


def test_an_unknown_key_near_a_known_one_gets_a_suggestion():
    text = (
        "version: 1\n"
        "accounts:\n"
        "  - platform: sandbox\n"
        "    handle: '@a'\n"
        "    sandbox: {sise: 10}\n"
        "rules:\n"
        "  windw: 90d\n"
        "  quite_unrelated: 1\n"
        "digest:\n"
        "  smtp: {hots: mail.example.org}\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_config(text=text)
    said = [str(p) for p in caught.value.problems]
    assert "line 7, rules.windw: not a key lopper knows; did you mean `window`?" in said
    assert "line 8, rules.quite_unrelated: not a key lopper knows" in said
    assert any("sandbox.sise: not a key lopper knows; did you mean `size`?" in p for p in said)
    assert any("smtp.hots: not a key lopper knows; did you mean `host`?" in p for p in said)
