"""Every error code a client can receive is listed in the README (house rule: bad input)."""

from pathlib import Path

from app import errors

README = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")


def all_subclasses(cls):
    for sub in cls.__subclasses__():
        yield sub
        yield from all_subclasses(sub)


def test_every_api_error_code_is_in_the_readme_error_table():
    codes = {cls.code for cls in all_subclasses(errors.ApiError)}
    assert len(codes) > 40
    missing = sorted(code for code in codes if f"| `{code}` |" not in README)
    assert missing == []
