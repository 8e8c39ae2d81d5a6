"""Realistic field values for generated rows, chosen by field name, else by field type.

Each maker is ``maker(rnd, index, ctx)``: ``rnd`` is the row's random stream,
``index`` the row number (used to keep names and codes unique) and ``ctx`` a
dict shared by the fields of one row, so related fields agree (a model's
provider, family and name; a deployment's name, region and URL). A field the
table below does not know still gets a valid value from its ``FieldType``.
"""

from __future__ import annotations

import calendar
from typing import Any, Callable

from garden_pipeline.catalogue import Field, FieldType
from garden_pipeline.simulator.clock import format_epoch_seconds
from garden_pipeline.simulator.rowrandom import RowRandom

Maker = Callable[[RowRandom, int, dict], Any]

# Generated (base) rows live in this window, safely in the past.
BASE_START = calendar.timegm((2025, 1, 1, 0, 0, 0))
BASE_END = calendar.timegm((2025, 12, 1, 0, 0, 0))

PROJECT_NAMES = (
    "Credit AI", "Support Copilot", "Fraud Radar", "Claims Assist", "Dev Productivity",
    "Marketing Studio", "Risk Insights", "HR Helpdesk", "Legal Review", "Supply Chain Brain",
    "Wealth Advisor", "Field Service Guide", "Procurement Desk", "Trade Surveillance",
    "Onboarding Buddy", "Compliance Watch", "Sales Coach", "Data Catalog Search",
)
USE_CASES = (
    ("Loan memo drafting", "Drafts credit memos from application data"),
    ("Ticket triage", "Routes incoming tickets to the right queue"),
    ("Contract review", "Flags unusual clauses in supplier contracts"),
    ("Fraud alert summarisation", "Summarises alert context for investigators"),
    ("Code review assistant", "Comments on pull requests"),
    ("Meeting notes", "Turns call transcripts into action items"),
    ("Product search", "Answers catalogue questions in natural language"),
    ("KYC document extraction", "Extracts fields from identity documents"),
    ("Email drafting", "Suggests replies to customer emails"),
    ("Translation", "Translates support articles"),
    ("Sentiment analysis", "Scores customer feedback"),
    ("Policy Q&A", "Answers employee questions about internal policies"),
    ("Invoice matching", "Matches invoices to purchase orders"),
    ("Embedding index", "Embeds documents for retrieval"),
)
# provider, family, model name, context window, max output tokens, capabilities
MODEL_PROFILES = (
    ("openai", "gpt-4o", "gpt-4o", 128000, 16384, ("chat", "vision", "tools", "json_mode", "streaming")),
    ("openai", "gpt-4o", "gpt-4o-mini", 128000, 16384, ("chat", "vision", "tools", "json_mode", "streaming")),
    ("openai", "gpt-4.1", "gpt-4.1", 1047576, 32768, ("chat", "vision", "tools", "json_mode", "streaming")),
    ("openai", "o3", "o3-mini", 200000, 100000, ("chat", "tools", "reasoning", "streaming")),
    ("openai", "text-embedding-3", "text-embedding-3-large", 8191, None, ("embeddings",)),
    ("anthropic", "claude-3.5", "claude-3-5-sonnet", 200000, 8192, ("chat", "vision", "tools", "streaming")),
    ("anthropic", "claude-3.5", "claude-3-5-haiku", 200000, 8192, ("chat", "tools", "streaming")),
    ("anthropic", "claude-4", "claude-sonnet-4", 200000, 64000, ("chat", "vision", "tools", "reasoning", "streaming")),
    ("anthropic", "claude-4", "claude-opus-4", 200000, 32000, ("chat", "vision", "tools", "reasoning", "streaming")),
    ("google", "gemini-1.5", "gemini-1.5-pro", 2097152, 8192, ("chat", "vision", "tools", "json_mode", "streaming")),
    ("google", "gemini-2.0", "gemini-2.0-flash", 1048576, 8192, ("chat", "vision", "tools", "streaming")),
    ("google", "gemini-2.5", "gemini-2.5-pro", 1048576, 65536, ("chat", "vision", "tools", "reasoning", "streaming")),
    ("meta", "llama-3.1", "llama-3.1-70b-instruct", 131072, 4096, ("chat", "tools", "streaming")),
    ("meta", "llama-3.1", "llama-3.1-405b-instruct", 131072, 4096, ("chat", "tools", "streaming")),
    ("meta", "llama-3.3", "llama-3.3-70b-instruct", 131072, 8192, ("chat", "tools", "streaming")),
    ("mistral", "mistral-large", "mistral-large-2411", 131072, 8192, ("chat", "tools", "json_mode", "streaming")),
    ("mistral", "mistral-small", "mistral-small-2503", 131072, 8192, ("chat", "vision", "tools", "streaming")),
    ("mistral", "codestral", "codestral-2501", 262144, 8192, ("chat", "completion", "streaming")),
    ("cohere", "command-r", "command-r-plus", 128000, 4096, ("chat", "tools", "streaming")),
    ("cohere", "embed", "embed-english-v3", 512, None, ("embeddings",)),
)


def _round_robin(profiles: tuple) -> tuple:
    """Alternate providers, so that even three models come from three providers."""
    by_provider: dict[str, list] = {}
    for profile in profiles:
        by_provider.setdefault(profile[0], []).append(profile)
    queues = list(by_provider.values())
    ordered = []
    while any(queues):
        ordered.extend(q.pop(0) for q in queues if q)
    return tuple(ordered)


MODEL_PROFILES = _round_robin(MODEL_PROFILES)
REGIONS = (
    "us-east-1", "us-west-2", "eu-west-1", "eu-central-1", "ap-southeast-1",
    "ap-northeast-1", "eastus", "westeurope", "europe-west4", "us-central1",
)
CURRENCIES = ("USD",) * 14 + ("EUR",) * 5 + ("GBP",)
BUDGET_AMOUNTS = (100, 250, 500, 1000, 1500, 2000, 2500, 5000, 7500, 10000, 25000, 50000)
THRESHOLDS = (0.5, 0.7, 0.75, 0.8, 0.8, 0.85, 0.9, 0.9, 0.95)
PERIODS = ("monthly",) * 6 + ("daily", "quarterly", "quarterly", "yearly")
REQUESTS_PER_MINUTE = (30, 60, 100, 300, 600, 1000, 3000, 10000)
GENERIC_WORDS = ("alpha", "beta", "gamma", "delta", "omega", "sigma", "kappa", "theta")


def _code(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name.upper()).strip("_").replace("__", "_")


def _numbered(names: tuple, index: int) -> tuple[Any, int]:
    """names[index % n] and the round number, so that names repeat with a suffix, never exactly."""
    return names[index % len(names)], index // len(names)


def _money(units: int, places: int) -> str:
    scale = 10**places
    return f"{units // scale}.{units % scale:0{places}d}"


def _days(n: int) -> int:
    return n * 86400


# field-specific makers ------------------------------------------------------------
def _project_name(rnd: RowRandom, i: int, ctx: dict) -> str:
    name, round_ = _numbered(PROJECT_NAMES, i)
    return name if round_ == 0 else f"{name} {round_ + 1}"


def _project_code(rnd: RowRandom, i: int, ctx: dict) -> str:
    name, round_ = _numbered(PROJECT_NAMES, i)
    return _code(name) if round_ == 0 else f"{_code(name)}_{round_ + 1}"


def _use_case_name(rnd: RowRandom, i: int, ctx: dict) -> str:
    (name, _), round_ = _numbered(USE_CASES, i)
    return name if round_ == 0 else f"{name} #{round_ + 1}"


def _use_case_code(rnd: RowRandom, i: int, ctx: dict) -> str:
    (name, _), round_ = _numbered(USE_CASES, i)
    return f"{_code(name)}_{i + 1}"


def _description(rnd: RowRandom, i: int, ctx: dict) -> str | None:
    if rnd.chance(0.2):
        return None
    return USE_CASES[i % len(USE_CASES)][1]


def _profile(i: int, ctx: dict) -> tuple:
    if "profile" not in ctx:
        ctx["profile"] = _numbered(MODEL_PROFILES, i)
    return ctx["profile"]


def _model_name(rnd: RowRandom, i: int, ctx: dict) -> str:
    profile, round_ = _profile(i, ctx)
    # Beyond the catalogue of base models, models are fine-tuned variants.
    return profile[2] if round_ == 0 else f"{profile[2]}-ft-{i + 1:05d}"


def _model_version(rnd: RowRandom, i: int, ctx: dict) -> str | None:
    if rnd.chance(0.15):
        return None
    return f"{rnd.between(2024, 2025)}-{rnd.between(1, 12):02d}-{rnd.between(1, 28):02d}"


def _capabilities(rnd: RowRandom, i: int, ctx: dict) -> list[str]:
    caps = list(_profile(i, ctx)[0][5])
    if "chat" in caps and rnd.chance(0.3):
        caps.append("batch")
    return caps


def _max_output_tokens(rnd: RowRandom, i: int, ctx: dict) -> int | None:
    return _profile(i, ctx)[0][4]


def _region(rnd: RowRandom, i: int, ctx: dict) -> str:
    if "region" not in ctx:
        ctx["region"] = rnd.choice(REGIONS)
    return ctx["region"]


def _deployment_name(rnd: RowRandom, i: int, ctx: dict) -> str:
    return f"{_region(rnd, i, ctx)}-dep-{i + 1:05d}"


def _endpoint_url(rnd: RowRandom, i: int, ctx: dict) -> str:
    region = _region(rnd, i, ctx)
    return f"https://{region}.inference.modelgarden.example.com/v1/deployments/{_deployment_name(rnd, i, ctx)}"


def _input_price(rnd: RowRandom, i: int, ctx: dict) -> str:
    ctx["input_units"] = units = rnd.between(1, 150)  # 0.0001 .. 0.0150 per 1k tokens
    return _money(units, 4)


def _output_price(rnd: RowRandom, i: int, ctx: dict) -> str:
    units = ctx.get("input_units") or rnd.between(1, 150)
    return _money(units * rnd.choice((2, 3, 4, 5)), 4)


def _effective_from(rnd: RowRandom, i: int, ctx: dict) -> str:
    ctx["effective_from"] = start = BASE_START + _days(rnd.below(300))
    return format_epoch_seconds(start)


def _effective_to(rnd: RowRandom, i: int, ctx: dict) -> str | None:
    if rnd.chance(0.7):
        return None
    start = ctx.get("effective_from", BASE_START)
    return format_epoch_seconds(start + _days(rnd.between(30, 365)))


def _requests_per_minute(rnd: RowRandom, i: int, ctx: dict) -> int:
    ctx["rpm"] = rpm = rnd.choice(REQUESTS_PER_MINUTE)
    return rpm


def _tokens_per_minute(rnd: RowRandom, i: int, ctx: dict) -> int:
    ctx["tpm"] = tpm = ctx.get("rpm", 100) * rnd.choice((200, 500, 1000, 2000))
    return tpm


def _tokens_per_day(rnd: RowRandom, i: int, ctx: dict) -> int | None:
    if rnd.chance(0.3):
        return None
    return ctx.get("tpm", 100000) * 60 * rnd.choice((2, 4, 8, 24))


FIELD_MAKERS: dict[str, Maker] = {
    "project_name": _project_name,
    "project_code": _project_code,
    "use_case_name": _use_case_name,
    "use_case_code": _use_case_code,
    "description": _description,
    "budget_amount": lambda rnd, i, ctx: _money(rnd.choice(BUDGET_AMOUNTS) * 100 + rnd.choice((0, 0, 0, 50)), 2),
    "currency": lambda rnd, i, ctx: rnd.choice(CURRENCIES),
    "period": lambda rnd, i, ctx: rnd.choice(PERIODS),
    "alert_threshold": lambda rnd, i, ctx: rnd.choice(THRESHOLDS),
    "model_name": _model_name,
    "provider": lambda rnd, i, ctx: _profile(i, ctx)[0][0],
    "model_family": lambda rnd, i, ctx: _profile(i, ctx)[0][1],
    "model_version": _model_version,
    "capabilities": _capabilities,
    "context_window": lambda rnd, i, ctx: _profile(i, ctx)[0][3],
    "max_output_tokens": _max_output_tokens,
    "deployment_name": _deployment_name,
    "region": _region,
    "endpoint_url": _endpoint_url,
    "input_price_per_1k_tokens": _input_price,
    "output_price_per_1k_tokens": _output_price,
    "effective_from": _effective_from,
    "effective_to": _effective_to,
    "requests_per_minute": _requests_per_minute,
    "tokens_per_minute": _tokens_per_minute,
    "tokens_per_day": _tokens_per_day,
}


# fallbacks by field type ------------------------------------------------------
def _enum(field: Field) -> Maker:
    # The catalogue lists the normal state first (active, ga): most rows are in it.
    first, rest = field.choices[0], field.choices[1:] or field.choices
    return lambda rnd, i, ctx: first if rnd.chance(0.85) else rnd.choice(rest)


def _integer(field: Field) -> Maker:
    low = int(field.minimum) if field.minimum is not None else 0
    high = int(field.maximum) if field.maximum is not None else low + 10000
    return lambda rnd, i, ctx: rnd.between(low, high)


def _number(field: Field) -> Maker:
    low = float(field.minimum) if field.minimum is not None else 0.0
    high = float(field.maximum) if field.maximum is not None else low + 1000.0
    return lambda rnd, i, ctx: round(low + (high - low) * rnd.random(), 2)


_TYPE_MAKERS: dict[FieldType, Callable[[Field], Maker]] = {
    FieldType.TEXT: lambda f: lambda rnd, i, ctx: f"{f.name.replace('_', ' ')} {i + 1}",
    FieldType.ENUM: _enum,
    FieldType.MONEY: lambda f: lambda rnd, i, ctx: _money(rnd.between(100, 1000000), 2),
    FieldType.CURRENCY: lambda f: lambda rnd, i, ctx: rnd.choice(CURRENCIES),
    FieldType.TIMESTAMP: lambda f: lambda rnd, i, ctx: format_epoch_seconds(BASE_START + rnd.below(BASE_END - BASE_START)),
    FieldType.INTEGER: _integer,
    FieldType.NUMBER: _number,
    FieldType.URI: lambda f: lambda rnd, i, ctx: f"https://modelgarden.example.com/{f.name}/{i + 1}",
    FieldType.TEXT_ARRAY: lambda f: lambda rnd, i, ctx: rnd.sample(GENERIC_WORDS, rnd.between(1, 3)),
    FieldType.ID: lambda f: lambda rnd, i, ctx: f"{f.name}-{i + 1}",
}


def maker_for(field: Field) -> Maker:
    """The value maker of one catalogue field (named maker first, else by type)."""
    named = FIELD_MAKERS.get(field.name)
    if named is not None:
        return named
    return _TYPE_MAKERS[field.type](field)
