import math
import re

import pytest

from agent_ng.tools.calculator import MAX_LENGTH, calculator, evaluate


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("17*23", "391"),
        ("2 + 3 * 4", "14"),
        ("(2 + 3) * 4", "20"),
        ("2 - 3 - 4", "-5"),
        ("2 ** 3 ** 2", "512"),
        ("2^10", "1024"),
        ("2 ^ 3 ^ 2", "512"),
        ("-3 ** 2", "-9"),
        ("(-3) ** 2", "9"),
        ("-(-4)", "4"),
        ("+5 - -2", "7"),
        ("7 / 2", "3.5"),
        ("7 // 2", "3"),
        ("-7 // 2", "-4"),
        ("-7 % 3", "2"),
        ("1 / 3", "0.3333333333333333"),
        ("2 ** -2", "0.25"),
        ("sqrt(16)", "4.0"),
        ("sqrt(9) + 1", "4.0"),
        ("abs(-3)", "3"),
        ("round(2.567, 2)", "2.57"),
        ("round(2.6)", "3"),
        ("floor(2.5) + ceil(2.1)", "5"),
        ("log(8, 2)", "3.0"),
        ("log10(1000)", "3.0"),
        ("exp(0)", "1.0"),
        ("1.5e3", "1500.0"),
        ("2 ** 100", "1267650600228229401496703205376"),
        ("  1 + 1  ", "2"),
    ],
)
def test_results(expression: str, expected: str) -> None:
    assert calculator.invoke({"expression": expression}) == expected


def test_constants_and_trigonometry() -> None:
    assert evaluate("pi") == math.pi
    assert evaluate("e") == math.e
    assert evaluate("sin(pi / 2)") == 1.0
    assert math.isclose(evaluate("cos(pi)"), -1.0)
    assert math.isclose(evaluate("tan(pi / 4)"), 1.0)


def test_integer_arithmetic_stays_exact() -> None:
    assert evaluate("3 ** 200 // 3 ** 199") == 3
    assert isinstance(evaluate("10 // 3"), int)


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("", "expression is empty"),
        ("   ", "expression is empty"),
        ("x + 1", "name 'x' is not allowed"),
        ("().__class__", "attribute access is not allowed"),
        ("__import__('os')", "function '__import__' is not allowed"),
        ("eval('1')", "function 'eval' is not allowed"),
        ("lambda: 1", "lambda is not allowed"),
        ("9**9**9", "exponent is too large"),
        ("2 ** 20000", "exponent is too large"),
        ("10 ** 5000", "result is too large"),
        ("1" * (MAX_LENGTH + 1), "expression is too long"),
        ("1 / 0", "division by zero"),
        ("1 // 0", "division by zero"),
        ("5 % 0", "division by zero"),
        ("0 ** -1", "division by zero"),
        ("-" * 150 + "1", "nested too deeply"),
        ("(" * 201 + "1" + ")" * 201, "too many nested parentheses"),
        ("1 +", "invalid expression"),
        ("'abc'", "constant 'abc' is not a number"),
        ("1j", "not a number"),
        ("[1, 2][0]", "indexing is not allowed"),
        ("1 < 2", "comparison is not allowed"),
        ("1 & 2", "operator BitAnd is not allowed"),
        ("sqrt", "'sqrt' is a function"),
        ("sqrt(x=4)", "keyword arguments are not allowed"),
        ("(1)(2)", "only named functions can be called"),
        ("sqrt(1, 2)", "bad arguments for sqrt()"),
        ("sqrt(-1)", "math domain error: sqrt(-1) is undefined"),
        ("log(0)", "math domain error"),
        ("(-8) ** (1/3)", "not a real number"),
        ("1e308 * 10", "not a finite number"),
        ("exp(1000)", "number is too large"),
        ("round(5, -10**7)", "round() digits must be at most"),
    ],
)
def test_refusals_name_the_problem(expression: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        calculator.invoke({"expression": expression})


def test_power_limit_refuses_before_computing() -> None:
    with pytest.raises(ValueError, match="387420489"):
        evaluate("9**9**9")


async def test_ainvoke_like_the_agent() -> None:
    assert await calculator.ainvoke({"expression": "17*23"}) == "391"


def test_tool_schema_and_description() -> None:
    assert calculator.name == "calculator"
    assert set(calculator.args) == {"expression"}
    assert "sqrt" in calculator.description
