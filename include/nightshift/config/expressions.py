"""Column expressions for a pipeline's ``derive:`` and ``filter:``: parsed and typed, never eval'd.

An expression is written in Python's syntax and limited to what a column formula needs:
column names, numbers, strings, ``True``/``False``/``None``; ``+ - * / // % **``; comparisons
(``<`` … ``!=``, ``is None``, ``is not None``, ``in [...]``, ``not in [...]``); ``and``,
``or``, ``not``; and the functions in ``FUNCTIONS``. Anything else (attributes, subscripts,
lambdas, other calls) is refused when the YAML is read, naming the expression. Each
expression is typed against the columns before any data is read (``nightshift check``), so an
unknown column or a wrong type is a configuration error, not a crash at 02:30.

Evaluation uses only operators and methods pandas and cuDF share, on whole columns.
"""

from __future__ import annotations

import ast
import operator
from dataclasses import dataclass
from typing import Any

NUMERIC = frozenset({"int", "float", "bool"})
# name -> (argument kinds, result type); "number", "any", "bool", "string", "timestamp"
# name a kind of argument, "same" a result typed like the first argument.
FUNCTIONS: dict[str, tuple[tuple[str, ...], str]] = {
    "isnull": (("any",), "bool"),
    "notnull": (("any",), "bool"),
    "abs": (("number",), "same"),
    "log1p": (("number",), "float"),
    "where": (("bool", "any", "any"), "same2"),
    "fillna": (("any", "any"), "same"),
    "lower": (("string",), "string"),
    "hour": (("timestamp",), "int"),
    "day_of_week": (("timestamp",), "int"),
    "month": (("timestamp",), "int"),
}
# Python's own operator functions: they dispatch to a column's methods, reflected ones too
# (``15 < arr_delay``, ``10 / flights``), for pandas and cuDF alike.
_ARITHMETIC = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_COMPARE = {
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
}


class ExpressionError(ValueError):
    """An expression that is not allowed, names an unknown column, or mixes types."""


@dataclass(frozen=True)
class Expression:
    """One parsed expression, as written in the YAML."""

    text: str
    tree: ast.expr

    def columns(self) -> set[str]:
        """The column names the expression reads."""
        return {n.id for n in ast.walk(self.tree) if isinstance(n, ast.Name)} - set(FUNCTIONS)

    def type_in(self, columns: dict[str, str]) -> str:
        """Return the expression's type over ``columns`` (name -> type); raise
        ExpressionError naming what does not fit."""
        return _Typer(columns, self.text).visit(self.tree)

    def evaluate(self, frame: Any, timezone: str = "UTC") -> Any:
        """Return the expression's values over ``frame`` (pandas or cuDF), one per row (an
        expression that reads no column is repeated). Date parts are taken in ``timezone``."""
        values = _Evaluator(frame, timezone).visit(self.tree)
        if _is_column(values):
            return values
        column = frame[frame.columns[0]]
        return type(column)([values] * len(frame), index=frame.index)


# A column formula is a line, not a program: past these it is refused when read, before the
# typer and evaluator recurse through it (500 terms of `+` exhausted Python's stack).
MAX_LENGTH = 2_000
MAX_DEPTH = 100
# `x ** 2` and `x ** 0.5` are formulas; `10 ** 10 ** 7` is a big integer that takes minutes.
MAX_EXPONENT = 64


def parse(text: str) -> Expression:
    """Parse ``text``; raise ExpressionError for syntax outside the allowed subset, and for
    a formula too long, too deeply nested, or raising to a power that is not a small number."""
    if len(text) > MAX_LENGTH:
        raise ExpressionError(
            f"'{text[:60]}…' is too long or too deeply nested ({len(text)} characters; "
            f"at most {MAX_LENGTH}): use a hook for logic this size"
        )
    try:
        tree = ast.parse(text, mode="eval").body
    except SyntaxError as exc:
        raise ExpressionError(f"'{text}' is not a valid expression: {exc.msg}") from None
    except (RecursionError, MemoryError):
        raise ExpressionError(f"'{text[:60]}…' is too long or too deeply nested") from None
    if _depth(tree) > MAX_DEPTH:
        raise ExpressionError(
            f"'{text[:60]}…' is too long or too deeply nested (more than {MAX_DEPTH} levels): "
            "use a hook for logic this size"
        )
    _check_nodes(text, tree)
    return Expression(text, tree)


def _depth(tree: ast.AST) -> int:
    """The nesting depth of ``tree``, counted without recursion."""
    deepest, stack = 0, [(tree, 1)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        stack.extend((child, depth + 1) for child in ast.iter_child_nodes(node))
    return deepest


def _small_exponent(node: ast.expr) -> bool:
    """Whether ``node`` is a number literal no larger than MAX_EXPONENT (sign allowed)."""
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        node = node.operand
    return (
        isinstance(node, ast.Constant)
        and isinstance(node.value, int | float)
        and not isinstance(node.value, bool)
        and abs(node.value) <= MAX_EXPONENT
    )


def _check_nodes(text: str, tree: ast.expr) -> None:
    """Raise ExpressionError for the first node outside the allowed subset."""
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.BinOp)
            and isinstance(node.op, ast.Pow)
            and not _small_exponent(node.right)
        ):
            raise ExpressionError(
                f"'{text}': the exponent of ** must be a number from -{MAX_EXPONENT} to "
                f"{MAX_EXPONENT}"
            )
        if not isinstance(node, _ALLOWED):
            raise ExpressionError(f"'{text}': {type(node).__name__} is not allowed here")
        if isinstance(node, ast.Call) and not (
            isinstance(node.func, ast.Name) and node.func.id in FUNCTIONS and not node.keywords
        ):
            raise ExpressionError(
                f"'{text}': only these functions may be called: {sorted(FUNCTIONS)}"
            )


_ALLOWED = (
    ast.Name,
    ast.Load,
    ast.Constant,
    ast.BinOp,
    ast.UnaryOp,
    ast.BoolOp,
    ast.Compare,
    ast.Call,
    ast.List,
    ast.Tuple,
    ast.And,
    ast.Or,
    ast.Not,
    ast.USub,
    ast.UAdd,
    ast.Is,
    ast.IsNot,
    ast.In,
    ast.NotIn,
    *_ARITHMETIC,
    *_COMPARE,
)


def _constant_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    return "string"


class _Typer(ast.NodeVisitor):
    """Work out an expression's type, refusing unknown columns and mixed types."""

    def __init__(self, columns: dict[str, str], text: str) -> None:
        self.columns = columns
        self.text = text

    def fail(self, problem: str) -> ExpressionError:
        return ExpressionError(f"'{self.text}': {problem}")

    def visit_Name(self, node: ast.Name) -> str:
        if node.id not in self.columns:
            raise self.fail(f"unknown column '{node.id}' (known: {sorted(self.columns)})")
        return self.columns[node.id]

    def visit_Constant(self, node: ast.Constant) -> str:
        return _constant_type(node.value)

    def visit_BinOp(self, node: ast.BinOp) -> str:
        left, right = self.visit(node.left), self.visit(node.right)
        if left not in NUMERIC or right not in NUMERIC:
            raise self.fail(f"arithmetic needs numbers, not {left} and {right}")
        if isinstance(node.op, ast.Div | ast.Pow) or "float" in (left, right):
            return "float"
        return "int"

    def visit_UnaryOp(self, node: ast.UnaryOp) -> str:
        operand = self.visit(node.operand)
        if isinstance(node.op, ast.Not):
            if operand != "bool":
                raise self.fail(f"'not' needs a true/false value, not {operand}")
            return "bool"
        if operand not in NUMERIC:
            raise self.fail(f"a sign needs a number, not {operand}")
        return "float" if operand == "float" else "int"

    def visit_BoolOp(self, node: ast.BoolOp) -> str:
        kinds = [self.visit(value) for value in node.values]
        if any(kind != "bool" for kind in kinds):
            raise self.fail(f"'and'/'or' need true/false values, not {kinds}")
        return "bool"

    def visit_Compare(self, node: ast.Compare) -> str:
        left = self.visit(node.left)
        for op, right_node in zip(node.ops, node.comparators, strict=True):
            if isinstance(op, ast.Is | ast.IsNot):
                if not (isinstance(right_node, ast.Constant) and right_node.value is None):
                    raise self.fail("'is' compares only with None ('x is None')")
                continue
            if isinstance(op, ast.In | ast.NotIn):
                self._members(right_node, left)
                continue
            right = self.visit(right_node)
            if not _comparable(left, right):
                raise self.fail(f"cannot compare {left} with {right}")
            left = right
        return "bool"

    def _members(self, node: ast.expr, kind: str) -> None:
        if not isinstance(node, ast.List | ast.Tuple) or not all(
            isinstance(e, ast.Constant) for e in node.elts
        ):
            raise self.fail("'in' needs a list of values ('x in [\"a\", \"b\"]')")
        for element in node.elts:
            if not _comparable(kind, self.visit(element)):
                raise self.fail(f"cannot compare {kind} with {self.visit(element)}")

    def visit_Call(self, node: ast.Call) -> str:
        assert isinstance(node.func, ast.Name)
        name = node.func.id
        wanted, result = FUNCTIONS[name]
        if len(node.args) != len(wanted):
            raise self.fail(f"{name}() takes {len(wanted)} argument(s)")
        kinds = [self.visit(arg) for arg in node.args]
        for index, (want, kind) in enumerate(zip(wanted, kinds, strict=True)):
            ok = want == "any" or (want == "number" and kind in NUMERIC) or want == kind
            if not ok:
                raise self.fail(f"{name}() argument {index + 1} must be {want}, not {kind}")
        if result == "same":
            return kinds[0]
        if result == "same2":
            return kinds[1] if kinds[1] != "null" else kinds[2]
        return result

    def generic_visit(self, node: ast.AST) -> str:
        raise self.fail(f"{type(node).__name__} is not allowed here")


def _comparable(left: str, right: str) -> bool:
    if "null" in (left, right):
        return True
    if left in NUMERIC and right in NUMERIC:
        return True
    return left == right


class _Evaluator(ast.NodeVisitor):
    """Compute a typed expression over a frame's columns."""

    def __init__(self, frame: Any, timezone: str) -> None:
        self.frame = frame
        self.timezone = timezone

    def visit_Name(self, node: ast.Name) -> Any:
        return self.frame[node.id]

    def visit_Constant(self, node: ast.Constant) -> Any:
        return node.value

    def visit_BinOp(self, node: ast.BinOp) -> Any:
        return _ARITHMETIC[type(node.op)](self.visit(node.left), self.visit(node.right))

    def visit_UnaryOp(self, node: ast.UnaryOp) -> Any:
        operand = self.visit(node.operand)
        if isinstance(node.op, ast.Not):
            return _negate(operand)
        return -operand if isinstance(node.op, ast.USub) else operand

    def visit_BoolOp(self, node: ast.BoolOp) -> Any:
        combine = operator.and_ if isinstance(node.op, ast.And) else operator.or_
        values = [self.visit(value) for value in node.values]
        result = values[0]
        for value in values[1:]:
            result = combine(result, value)
        return result

    def visit_Compare(self, node: ast.Compare) -> Any:
        result = None
        left = self.visit(node.left)
        for op, right_node in zip(node.ops, node.comparators, strict=True):
            if isinstance(op, ast.Is | ast.IsNot):
                part = _isnull(left)
            elif isinstance(op, ast.In | ast.NotIn):
                part = left.isin([e.value for e in right_node.elts])  # type: ignore[attr-defined]
            else:
                right = self.visit(right_node)
                part = _COMPARE[type(op)](left, right)
                left = right
            if isinstance(op, ast.IsNot | ast.NotIn):
                part = _negate(part)
            result = part if result is None else result & part
        return result

    def visit_Call(self, node: ast.Call) -> Any:
        assert isinstance(node.func, ast.Name)
        args = [self.visit(arg) for arg in node.args]
        if node.func.id in _DATE_PARTS:
            return getattr(args[0].dt.tz_convert(self.timezone).dt, _DATE_PARTS[node.func.id])
        return _CALLS[node.func.id](*args)


def _is_column(value: Any) -> bool:
    return hasattr(value, "isna")


def _negate(value: Any) -> Any:
    return ~value if _is_column(value) else not value


def _isnull(value: Any) -> Any:
    return value.isna() if _is_column(value) else value is None


def _where(condition: Any, then: Any, otherwise: Any) -> Any:
    if _is_column(then):
        return then.where(condition.fillna(False), otherwise)
    import numpy as np

    values = np.where(condition.fillna(False).to_numpy(dtype=bool), then, otherwise)
    return type(condition)(values, index=condition.index)


def _log1p(values: Any) -> Any:
    import numpy as np

    return np.log1p(values.astype("float64"))


_CALLS: dict[str, Any] = {
    "isnull": _isnull,
    "notnull": lambda x: _negate(_isnull(x)),
    "abs": abs,
    "log1p": _log1p,
    "where": _where,
    "fillna": lambda x, value: x.fillna(value),
    "lower": lambda x: x.str.lower(),
}
# Date parts, taken in the pipeline's timezone: name -> the ``.dt`` attribute.
_DATE_PARTS = {"hour": "hour", "day_of_week": "dayofweek", "month": "month"}
