"""Arithmetic for the agent, without handing model output to ``eval``.

Models get arithmetic wrong and an expression is cheap to check, so the agent gets a
calculator. The expression comes from a model (and through it from whoever wrote the
prompt), so it is parsed with ``ast`` and only a whitelist of nodes is evaluated: numbers,
arithmetic operators, parentheses, and a few functions and constants from ``math``.
Limits on input length, nesting, exponents and result size keep one call from eating the
CPU or memory. Every refusal is a ``ValueError`` that says what was wrong, so the model
can fix its call.
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable

from langchain_core.tools import tool

Number = int | float

MAX_LENGTH = 500
MAX_DEPTH = 100
MAX_EXPONENT = 10_000
MAX_DIGITS = 4_000
"""Largest integer result, in decimal digits; below Python's 4,300-digit ``str(int)`` limit."""

_BINARY_OPS: dict[type[ast.operator], Callable[[Number, Number], Number]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY_OPS: dict[type[ast.unaryop], Callable[[Number], Number]] = {
    ast.UAdd: operator.pos,
    ast.USub: operator.neg,
}


def _round(number: Number, ndigits: int | None = None) -> Number:
    # int.__round__ computes 10 ** -ndigits, so a huge negative ndigits would hang.
    if ndigits is not None and abs(ndigits) > MAX_DIGITS:
        raise ValueError(f"round() digits must be at most {MAX_DIGITS:,} in absolute value")
    return round(number, ndigits)


_FUNCTIONS: dict[str, Callable[..., Number]] = {
    "sqrt": math.sqrt,
    "log": math.log,
    "log10": math.log10,
    "exp": math.exp,
    "sin": math.sin,
    "cos": math.cos,
    "tan": math.tan,
    "abs": abs,
    "round": _round,
    "floor": math.floor,
    "ceil": math.ceil,
}
_CONSTANTS: dict[str, float] = {"pi": math.pi, "e": math.e}
_SYNTAX_NAMES: dict[type[ast.AST], str] = {
    ast.Attribute: "attribute access",
    ast.Lambda: "lambda",
    ast.Subscript: "indexing",
    ast.Compare: "comparison",
    ast.BoolOp: "and/or",
}


def evaluate(expression: str) -> Number:
    """Evaluate an arithmetic expression; raise ``ValueError`` saying why if it is refused."""
    source = expression.strip()
    if not source:
        raise ValueError("expression is empty")
    if len(source) > MAX_LENGTH:
        raise ValueError(f"expression is too long: {len(source)} characters, limit {MAX_LENGTH}")
    try:
        tree = ast.parse(source.replace("^", "**"), mode="eval")
    except SyntaxError as exc:
        raise ValueError(f"invalid expression: {exc.msg}") from None
    try:
        return _eval(tree.body, depth=1)
    except ZeroDivisionError:
        raise ValueError("division by zero") from None
    except OverflowError as exc:
        raise ValueError(f"number is too large: {exc}") from None


def format_number(value: Number) -> str:
    """Integers as digits ("391"), floats as ``repr`` ("0.1", "2.0", "1e+20")."""
    return str(value) if isinstance(value, int) else repr(value)


@tool
def calculator(expression: str) -> str:
    """Evaluate an arithmetic expression exactly and return the result as text.

    Accepts integers and decimals (1e-3 too), + - * / // % and ** (^ also means power),
    unary minus, parentheses, the functions sqrt, log (natural, or log(x, base)), log10,
    exp, sin, cos, tan (radians), abs, round, floor, ceil, and the constants pi and e.
    Example: "sqrt(2) * (3 + 4)^2". Nothing else: no variables, strings or other
    functions. Integer arithmetic is exact; results over 4000 digits are refused.
    """
    return format_number(evaluate(expression))


def _eval(node: ast.expr, depth: int) -> Number:
    if depth > MAX_DEPTH:
        raise ValueError(f"expression is nested too deeply: more than {MAX_DEPTH} levels")
    match node:
        case ast.Constant(value=value) if type(value) in (int, float):
            return _checked(value)
        case ast.Constant(value=value):
            raise ValueError(f"unsupported syntax: constant {value!r} is not a number")
        case ast.Name(id=name):
            return _constant(name)
        case ast.UnaryOp(op=op, operand=operand) if type(op) in _UNARY_OPS:
            return _UNARY_OPS[type(op)](_eval(operand, depth + 1))
        case ast.BinOp(left=left, op=op, right=right) if type(op) in _BINARY_OPS:
            return _binary(op, _eval(left, depth + 1), _eval(right, depth + 1))
        case ast.Call(func=ast.Name(id=name), args=args, keywords=[]):
            return _call(name, args, depth)
        case ast.Call(func=ast.Name(), keywords=[_, *_]):
            raise ValueError("unsupported syntax: keyword arguments are not allowed")
        case ast.Call():
            raise ValueError("unsupported syntax: only named functions can be called")
        case ast.BinOp(op=op) | ast.UnaryOp(op=op):
            raise ValueError(f"unsupported syntax: operator {type(op).__name__} is not allowed")
    what = _SYNTAX_NAMES.get(type(node), type(node).__name__)
    raise ValueError(f"unsupported syntax: {what} is not allowed")


def _constant(name: str) -> float:
    if name in _CONSTANTS:
        return _CONSTANTS[name]
    if name in _FUNCTIONS:
        raise ValueError(f"{name!r} is a function: call it, as in {name}(2)")
    raise ValueError(f"unsupported syntax: name {name!r} is not allowed")


def _binary(op: ast.operator, left: Number, right: Number) -> Number:
    if isinstance(op, ast.Pow):
        _check_power(left, right)
    result = _BINARY_OPS[type(op)](left, right)
    if isinstance(result, complex):
        raise ValueError(
            f"result is not a real number: negative base {left!r} with fractional exponent"
            f" {right!r}"
        )
    return _checked(result)


def _check_power(base: Number, exponent: Number) -> None:
    if abs(exponent) > MAX_EXPONENT:
        raise ValueError(
            f"exponent is too large: {exponent!r}, at most {MAX_EXPONENT:,} in absolute value"
        )
    if isinstance(base, int) and isinstance(exponent, int) and exponent > 0 and base:
        digits = exponent * math.log10(abs(base))
        if digits > MAX_DIGITS:
            raise ValueError(
                f"result is too large: {base} ** {exponent} has about {digits:,.0f} digits,"
                f" limit {MAX_DIGITS:,}"
            )


def _call(name: str, arg_nodes: list[ast.expr], depth: int) -> Number:
    function = _FUNCTIONS.get(name)
    if function is None:
        raise ValueError(f"unsupported syntax: function {name!r} is not allowed")
    args = [_eval(arg, depth + 1) for arg in arg_nodes]
    try:
        return _checked(function(*args))
    except TypeError as exc:
        raise ValueError(f"bad arguments for {name}(): {exc}") from None
    except ValueError as exc:
        if str(exc) != "math domain error":
            raise
        shown = ", ".join(format_number(arg) for arg in args)
        raise ValueError(f"math domain error: {name}({shown}) is undefined") from None


def _checked(value: Number) -> Number:
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"result is not a finite number: {value!r}")
    if isinstance(value, int) and value.bit_length() > MAX_DIGITS * math.log2(10):
        raise ValueError(f"result is too large: more than {MAX_DIGITS:,} digits")
    return value
