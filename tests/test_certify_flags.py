"""docs/usage.md's flag table of `certify.py certify` against its parser, and the parsing the
table promises (so that the reference cannot drift from the code)."""

import argparse
import re
import typing
from dataclasses import dataclass
from pathlib import Path

import pytest

from unicr_pl.commands import certify_dataset
from unicr_pl.commands.certify_dataset import build_parser

USAGE = Path(__file__).resolve().parents[1] / "docs" / "usage.md"
HEADING = "### Flags of certify.py certify"
COLUMNS = ["flag", "default", "values", "meaning"]
TYPES = {"str": str, "int": int, "float": float, "bool": bool}
BOOLS = {"true": True, "false": False}
NOTHING = "-"  # the table's cell for no default (a required flag) and for no help
# Not the command's own flags: argparse's --help, a config file, Lightning's --trainer.* group.
NOT_OURS = {"help", "config", "print_config", "trainer"}


@dataclass(frozen=True)
class Values:
    """What a flag accepts: the table's `values` column, or the same read off the parser."""

    type: object
    optional: bool = False
    nargs: int | str | None = None
    choices: tuple[str, ...] | None = None
    required: bool = False


def table_rows() -> list[dict[str, str]]:
    """The rows of the first table under HEADING, keyed by column, backticks dropped."""
    lines = USAGE.read_text().splitlines()
    table: list[list[str]] = []
    for line in lines[lines.index(HEADING) + 1 :]:
        if line.startswith("#") or (table and not line.startswith("|")):
            break  # the next section, or the end of the table
        if line.startswith("|"):
            table.append([cell.strip().strip("`") for cell in line.strip("|").split("|")])
    header, rule, *rows = table
    assert header == COLUMNS and set("".join(rule)) == {"-"}
    return [dict(zip(header, row, strict=True)) for row in rows]


def our_actions(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """The command's own flags by their option string, in the parser's order."""
    return {
        ", ".join(action.option_strings): action
        for action in parser._actions
        if action.dest.split(".")[0] not in NOT_OURS
    }


def parse_values(cell: str) -> Values:
    """The table's grammar: `T`, `T or none`, `two Ts`, `one or more ... (T)`, `one of a, b`,
    each optionally followed by `, required`."""
    required = cell.endswith(", required")
    cell = cell.removesuffix(", required")
    if match := re.fullmatch(r"one of (.+)", cell):
        return Values(str, choices=tuple(match[1].split(", ")), required=required)
    if match := re.fullmatch(r"one or more .+ \((\w+)\)", cell):
        return Values(TYPES[match[1]], nargs="+", required=required)
    if match := re.fullmatch(r"two (\w+)s", cell):
        return Values(TYPES[match[1]], nargs=2, required=required)
    match = re.fullmatch(r"(\w+)( or none)?", cell)
    assert match, f"unreadable values cell {cell!r}"
    return Values(TYPES[match[1]], optional=bool(match[2]), required=required)


def action_values(action: argparse.Action) -> Values:
    # jsonargparse keeps the declared type in _typehint (action.type is its own converter).
    hint = getattr(action, "_typehint", None)
    members = typing.get_args(hint) or (hint,)
    (kind,) = [member for member in members if member is not type(None)]
    choices = tuple(action.choices) if action.choices is not None else None
    return Values(kind, type(None) in members, action.nargs, choices, action.required)


def parse_default(cell: str, values: Values) -> object:
    """The default as a user types it, converted by the table's own type (not the parser's)."""
    if cell == "none":
        return None
    convert = BOOLS.__getitem__ if values.type is bool else values.type
    words = [convert(word) for word in cell.split()]
    if values.nargs is not None:
        return words
    (word,) = words
    return word


@pytest.fixture(scope="module")
def rows() -> dict[str, dict[str, str]]:
    return {row["flag"]: row for row in table_rows()}


@pytest.fixture
def actions() -> dict[str, argparse.Action]:
    # Built in each test, not once per module: mutation testing maps the parser's code to the
    # tests that run it, and a module fixture runs it inside the first test only.
    return our_actions(build_parser())


def parse(*argv: str, ckpt: str = "c.ckpt") -> argparse.Namespace:
    """The command's arguments from argv, --ckpt given."""
    return build_parser().parse_args(["--ckpt", ckpt, *argv])


def refusal(capsys, argv: list[str]) -> str:
    """The usage error that parsing argv must end in (jsonargparse exits with status 2)."""
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(argv)
    assert exit_.value.code == 2
    return capsys.readouterr().err


def test_table_lists_the_flags_in_the_parsers_order(actions):
    # From the rows themselves: the `rows` fixture's dict would hide a repeated row.
    assert [row["flag"] for row in table_rows()] == list(actions)


def test_table_meaning_is_the_help(rows, actions):
    assert {flag: row["meaning"] for flag, row in rows.items()} == {
        flag: action.help or NOTHING for flag, action in actions.items()
    }


def test_table_values_are_the_parsers(rows, actions):
    assert {flag: parse_values(row["values"]) for flag, row in rows.items()} == {
        flag: action_values(action) for flag, action in actions.items()
    }


def test_table_default_is_the_parsers(rows, actions):
    # repr tells 100 from 100.0 and True from 1, which == does not.
    table = {
        flag: row["default"]
        if row["default"] == NOTHING
        else repr(parse_default(row["default"], parse_values(row["values"])))
        for flag, row in rows.items()
    }
    parser = {
        # Only a required flag goes without a default (argparse holds None for it).
        flag: NOTHING if action.required and action.default is None else repr(action.default)
        for flag, action in actions.items()
    }
    assert table == parser


def test_ckpt_is_required(capsys):
    err = refusal(capsys, [])
    assert "required" in err and "ckpt" in err


def test_precision_takes_only_its_choices(capsys, rows):
    for choice in parse_values(rows["--precision"]["values"]).choices:
        assert parse("--precision", choice).precision == choice
    assert "--precision" in refusal(capsys, ["--ckpt", "c", "--precision", "64-true"])


def test_norms_take_several_orders():
    assert parse("--norms", "1", "2").norms == ["1", "2"]


@pytest.mark.parametrize("flag", ["--iopt_sigma_bounds", "--iopt_beta_bounds"])
def test_bounds_take_exactly_two_floats(capsys, flag):
    bounds = getattr(parse(flag, "0.1", "0.2"), flag.removeprefix("--"))
    assert repr(bounds) == repr([0.1, 0.2])
    assert flag in refusal(capsys, ["--ckpt", "c", flag, "0.1"])


def test_numbers_are_converted():
    config = parse("--n", "5", "--alpha0", "0.01")
    assert repr(config.n) == "5" and repr(config.alpha0) == "0.01"


@pytest.mark.parametrize(
    ("flag", "text", "value"),
    [
        ("--channels_last", "true", True),
        ("--multiclass", "true", True),
        ("--iopt", "true", True),
        ("--iopt_sound", "false", False),
    ],
)
def test_booleans_are_converted(flag, text, value):
    assert getattr(parse(flag, text), flag.removeprefix("--")) is value


def test_sigma_is_a_float_or_none():
    assert repr(parse("--sigma", "0.3").sigma) == "0.3"
    assert parse().sigma is None


def test_out_is_the_file_name():
    assert parse("--out", "x.tsv").out == "x.tsv"


def test_help_names_the_command_and_describes_it():
    text = build_parser().format_help()
    description = certify_dataset.__doc__.splitlines()[0]
    assert text.startswith("usage: certify.py certify ")
    # argparse re-wraps the description to the terminal's width.
    assert " ".join(description.split()) in " ".join(text.split())
