from pathlib import Path

import pytest
from sentiment_server.cli import build_parser
from sentiment_server.settings import ServeSettings, UpSettings, env_name, pick, settings_from


def parse(argv, cls, env):
    return settings_from(cls, build_parser().parse_args(argv), env)


def test_defaults_bind_loopback_on_50051():
    s = parse(["serve"], ServeSettings, {})
    assert (s.host, s.port, s.triton_url) == ("127.0.0.1", 50051, "127.0.0.1:8001")
    assert s.model_repository == Path("model_repository")


def test_flag_beats_env_beats_default():
    env = {"SENTIMENT_PORT": "6000", "SENTIMENT_MAX_WAIT_MS": "1.5", "SENTIMENT_REFLECTION": "false"}
    s = parse(["serve"], ServeSettings, env)
    assert (s.port, s.max_wait_ms, s.reflection) == (6000, 1.5, False)
    s = parse(["serve", "--port", "7000", "--reflection"], ServeSettings, env)
    assert (s.port, s.reflection) == (7000, True)


def test_every_field_has_a_flag_and_an_env_var():
    parser = build_parser()
    up_help = parser._subparsers._group_actions[0].choices["up"].format_help()  # type: ignore[union-attr,index]
    for name in UpSettings.__dataclass_fields__:
        assert "--" + name.replace("_", "-") in up_help
        assert env_name(name) in up_help


@pytest.mark.parametrize(("var", "value"), [("SENTIMENT_PORT", "many"), ("SENTIMENT_DTYPE", "int3")])
def test_bad_env_values_are_refused_clearly(var, value):
    with pytest.raises(SystemExit, match=var):
        parse(["up"], UpSettings, {var: value})


def test_pick_narrows_wider_settings():
    up = parse(["up", "--port", "0", "--dtype", "bf16"], UpSettings, {})
    serve = pick(ServeSettings, up)
    assert isinstance(serve, ServeSettings) and serve.port == 0


def test_the_planning_overhead_is_learned_unless_a_number_is_set():
    from sentiment_server.transport.server import planning_overhead

    assert ServeSettings().batch_overhead_tokens == "12"
    assert planning_overhead("auto") is None
    assert planning_overhead(" AUTO ") is None
    assert planning_overhead("4000") == 4000
    with pytest.raises(ValueError, match="--batch-overhead-tokens must be a number or 'auto'"):
        planning_overhead("lots")
