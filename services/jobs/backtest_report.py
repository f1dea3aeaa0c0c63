"""``smz evaluate``'s report: the summary table on the terminal and the self-contained HTML report.

The numbers come from ``shared.metrics`` and ``shared.backtest_report``; this module only lays them
out. The HTML report is one file with its charts inlined as PNG (no script, no network): open it
anywhere, attach it anywhere.
"""

from __future__ import annotations

import base64
import html
import io
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from matplotlib.figure import Figure
from rich.console import Console
from rich.table import Table

from shared.backtest_report import TRADING_DAYS_PER_YEAR, BacktestSummary, GroupStats
from shared.env import TRADE_LOG_FIELDS
from shared.metrics import TradeMetrics

if TYPE_CHECKING:
    from services.jobs.evaluate import Backtest
    from shared.evaluation import EvaluationResult

REPORT_FILE = "report.html"
TRADES_SHOWN = 5_000  # rows of the HTML trades table; the whole log is `--trades-csv`


def utc_time(ts: int, fmt: str = "%Y-%m-%dT%H:%M:%SZ") -> str:
    return datetime.fromtimestamp(int(ts), UTC).strftime(fmt)


def _day(ts: int) -> str:
    return utc_time(ts, "%Y-%m-%d")


def _pips(value: float, decimals: int = 2) -> str:
    return f"{value:+,.{decimals}f}"


def _share(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def _factor(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"  # None: no losing trade to divide by


# ------------------------------------------------------------------------------------------ rows
def summary_rows(m: TradeMetrics, s: BacktestSummary) -> list[tuple[str, str]]:
    """The headline numbers of one policy, as (label, value) rows for both the terminal and HTML."""
    low, high = m.expectancy_ci95
    pf, spell = s.overall.profit_factor, s.longest_drawdown
    if spell is None:
        longest = "none (never below a peak)"
    else:
        until = _day(spell.end_ts) if spell.recovered else f"{_day(spell.end_ts)} (not recovered)"
        longest = f"{spell.days:.1f} days, {_day(spell.peak_ts)} to {until}, {spell.trades:,} trades"
    return [
        ("trades", f"{m.trades:,} in {m.sessions:,} sessions ({m.trades_per_session:.2f} a session)"),
        ("expectancy", f"{_pips(m.expectancy_pips)} pips a trade"),
        ("95% interval", f"{_pips(low)} to {_pips(high)} ({'edge' if m.edge else 'no edge'})"),
        ("win rate", f"{_share(m.win_rate)} (wins {m.avg_win_pips:.2f}, losses {m.avg_loss_pips:.2f} pips)"),
        ("profit factor", _factor(pf) + (" (no losing trade)" if pf is None and m.trades else "")),
        ("SQN", f"{m.sqn:.2f}"),
        (
            "Sharpe, daily P&L",
            f"{s.sharpe:.2f} over {s.trading_days} days (mean {_pips(s.daily_mean_pips)}, "
            f"sd {s.daily_std_pips:.2f} pips)",
        ),
        ("total P&L", f"{_pips(m.total_pips, 1)} pips ({_pips(m.pips_per_session)} a session)"),
        ("max drawdown", f"{m.max_drawdown_pips:,.1f} pips"),
        ("longest drawdown", longest),
        ("largest win / loss", f"{_pips(s.largest_win_pips, 1)} / {_pips(s.largest_loss_pips, 1)} pips"),
        ("mean bars held", f"{s.mean_bars_held:.1f}"),
        (
            "health",
            f"{m.health} (long entries {_share(m.long_entry_share)}, "
            f"HOLD while flat {_share(m.flat_hold_share)})",
        ),
    ]


COMPARISON_HEADERS = (
    "policy",
    "trades",
    "expectancy",
    "95% interval",
    "win rate",
    "profit factor",
    "SQN",
    "Sharpe",
    "total pips",
    "max drawdown",
    "health",
)


# The terminal's columns of the comparison (80 columns wide when not a terminal); HTML shows all.
TERMINAL_COMPARISON = ("policy", "trades", "expectancy", "95% interval", "total pips")


def comparison_rows(backtest: Backtest) -> list[list[str]]:
    """One row per policy run on the same sessions: the evaluated policy first, then the baselines."""
    rows = []
    for name, result in backtest.results.items():
        m, s = result.metrics, backtest.summary(name)
        low, high = m.expectancy_ci95
        rows.append(
            [
                name,
                f"{m.trades:,}",
                _pips(m.expectancy_pips),
                f"{_pips(low)} to {_pips(high)}" + (" edge" if m.edge else ""),
                _share(m.win_rate),
                _factor(s.overall.profit_factor),
                f"{m.sqn:.2f}",
                f"{s.sharpe:.2f}",
                _pips(m.total_pips, 1),
                f"{m.max_drawdown_pips:,.1f}",
                m.health,
            ]
        )
    return rows


BREAKDOWN_HEADERS = ("trades", "total pips", "expectancy", "win rate", "profit factor")


def breakdown_rows(groups: list[GroupStats]) -> list[list[str]]:
    return [
        [
            g.key,
            f"{g.trades:,}",
            _pips(g.total_pips, 1),
            _pips(g.expectancy_pips),
            _share(g.win_rate),
            _factor(g.profit_factor),
        ]
        for g in groups
    ]


def breakdowns(s: BacktestSummary) -> list[tuple[str, str, list[GroupStats]]]:
    """(id, title, groups) of each breakdown, in the report's order."""
    return [
        ("by-side", "side", s.by_side),
        ("by-exit-reason", "exit reason", s.by_exit_reason),
        ("by-hour", "hour of entry (UTC)", s.by_hour),
        ("by-month", "month of exit (UTC)", s.by_month),
    ]


# -------------------------------------------------------------------------------------- terminal
def _rich_table(title: str, headers: Sequence[str], rows: list[list[str]]) -> Table:
    table = Table(title=title, title_justify="left")
    for i, header in enumerate(headers):
        table.add_column(header, justify="left" if i == 0 else "right")
    for row in rows:
        table.add_row(*row)
    return table


def print_summary(backtest: Backtest, console: Console) -> None:
    """The terminal's view: the headline numbers, by side and by exit reason, and the baselines."""
    name = backtest.policy
    m, s = backtest.result.metrics, backtest.summary(name)
    summary = Table(title=f"{name} on {backtest.title}", title_justify="left", show_header=False)
    summary.add_column(style="bold")
    summary.add_column()
    for label, value in summary_rows(m, s):
        summary.add_row(label, value)
    console.print(summary)
    for _, title, groups in breakdowns(s)[:2]:
        console.print(_rich_table(f"by {title}", (title, *BREAKDOWN_HEADERS), breakdown_rows(groups)))
    if len(backtest.results) > 1:
        keep = [COMPARISON_HEADERS.index(header) for header in TERMINAL_COMPARISON]
        rows = [[row[i] for i in keep] for row in comparison_rows(backtest)]
        console.print(_rich_table("beside the baselines (first: evaluated)", TERMINAL_COMPARISON, rows))


# ---------------------------------------------------------------------------------------- charts
def _exit_times(result: EvaluationResult) -> list[datetime]:
    return [datetime.fromtimestamp(int(t), UTC) for t in result.trades.exit_ts]


def _step_chart(
    lines: dict[str, tuple[EvaluationResult, np.ndarray, str]],
    main: str,
    title: str,
    ylabel: str,
    height: float,
) -> Figure:
    """One step line per policy over its trades' exit times: {name: (result, values, label)}."""
    fig = Figure(figsize=(11, height))
    ax = fig.subplots()
    for name, (result, values, label) in lines.items():
        width = 2.0 if name == main else 1.0
        ax.step(_exit_times(result), values, where="post", label=label, linewidth=width)
    ax.axhline(0.0, color="grey", linewidth=0.5)  # HOLD's: no trade, 0 pips
    ax.set(title=title, xlabel="exit time (UTC)", ylabel=ylabel)
    ax.legend(fontsize=8)
    fig.autofmt_xdate()
    fig.tight_layout()
    return fig


def equity_figure(results: dict[str, EvaluationResult], main: str, title: str) -> Figure:
    """Cumulative P&L in pips at each trade's exit time, one line per policy."""
    lines = {}
    for name, result in results.items():
        m = result.metrics
        low, high = m.expectancy_ci95
        label = (
            f"{name}: {m.expectancy_pips:+.2f} pips/trade (95% CI {low:+.2f} to {high:+.2f}"
            f"{', edge' if m.edge else ''}) over {m.trades} trades, {m.health}"
        )
        lines[name] = (result, np.cumsum(result.trades.pnl_pips), label)
    return _step_chart(lines, main, f"equity, {title}", "cumulative P&L (pips)", height=5)


def drawdown_figure(backtest: Backtest) -> Figure:
    """How far each policy's equity lies below its running peak, at each trade's exit time."""
    lines = {
        name: (result, -backtest.summary(name).drawdown[1:], name)
        for name, result in backtest.results.items()
    }
    title = f"drawdown, {backtest.title}"
    return _step_chart(lines, backtest.policy, title, "below the running peak (pips)", height=4)


def pnl_histogram(backtest: Backtest) -> Figure:
    """The evaluated policy's trade P&L, with 0 and the expectancy marked."""
    m = backtest.result.metrics
    fig = Figure(figsize=(11, 4))
    ax = fig.subplots()
    ax.hist(backtest.result.trades.pnl_pips, bins=60, color="tab:blue")
    ax.axvline(0.0, color="grey", linewidth=0.8)
    ax.axvline(
        m.expectancy_pips, color="tab:red", linewidth=1.2, label=f"expectancy {_pips(m.expectancy_pips)}"
    )
    ax.set(title=f"trade P&L, {backtest.policy}", xlabel="P&L after spread (pips)", ylabel="trades")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def _png_data_uri(fig: Figure) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


# ------------------------------------------------------------------------------------------ HTML
_STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 2em auto; max-width: 1150px; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
th, td { padding: 0.2em 0.7em; border-bottom: 1px solid #ddd; text-align: right; }
th:first-child, td:first-child { text-align: left; }
#summary td { text-align: left; }
caption { text-align: left; font-weight: bold; padding: 0.3em 0; }
figure { margin: 1em 0; } figure img { max-width: 100%; }
figcaption { color: #555; font-size: 0.9em; }
.breakdowns { display: flex; flex-wrap: wrap; gap: 0 2em; align-items: flex-start; }
pre { background: #f6f6f6; padding: 1em; overflow-x: auto; }
"""


def _html_table(headers: Sequence[str], rows: list[list[str]], caption: str = "", table_id: str = "") -> str:
    head = "".join(f"<th scope='col'>{html.escape(h)}</th>" for h in headers)
    body = "\n".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    ident = f" id='{table_id}'" if table_id else ""
    cap = f"<caption>{html.escape(caption)}</caption>" if caption else ""
    return f"<table{ident}>{cap}<thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody></table>"


def _figure(fig_id: str, fig: Figure, alt: str, caption: str) -> str:
    return (
        f"<figure id='{fig_id}'><img src='{_png_data_uri(fig)}' alt='{html.escape(alt)}'>"
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
    )


def _trades_section(backtest: Backtest) -> str:
    trades = backtest.result.trades
    rows = []
    for i, row in enumerate(trades.rows()[:TRADES_SHOWN], start=1):
        row["entry_ts"] = utc_time(row["entry_ts"], "%Y-%m-%d %H:%M")  # type: ignore[arg-type]
        row["exit_ts"] = utc_time(row["exit_ts"], "%Y-%m-%d %H:%M")  # type: ignore[arg-type]
        row["pnl_pips"] = _pips(row["pnl_pips"])  # type: ignore[arg-type]
        rows.append([str(i), *(str(row[field]) for field in TRADE_LOG_FIELDS[1:])])
    shown = (
        f"All {len(trades):,} trades"
        if len(trades) <= TRADES_SHOWN
        else f"The first {TRADES_SHOWN:,} of {len(trades):,} trades (the whole log: --trades-csv)"
    )
    headers = ("#", *TRADE_LOG_FIELDS[1:])
    note = f"{shown}, in the order they closed; times UTC, P&L after the spread."
    return f"<h2>Trades</h2><p>{html.escape(note)}</p>" + _html_table(headers, rows, table_id="trades")


def render_html(backtest: Backtest) -> str:
    """The whole report as one HTML document."""
    name, title = backtest.policy, backtest.title
    m, s = backtest.result.metrics, backtest.summary(name)
    settings = ", ".join(
        f"{key} {backtest.report[key]}"
        for key in ("instrument", "split", "start", "end", "checkpoint", "reward", "spread_pips")
        if key in backtest.report
    )
    splits = "".join(
        _html_table((label, *BREAKDOWN_HEADERS), breakdown_rows(groups), f"by {label}", table_id)
        for table_id, label, groups in breakdowns(s)
    )
    charts = [
        _figure(
            "equity-chart",
            equity_figure(backtest.results, name, title),
            "equity curves",
            "Cumulative P&L after spread at each trade's exit, beside the baselines on the same sessions.",
        ),
        _figure(
            "drawdown-chart",
            drawdown_figure(backtest),
            "drawdown curves",
            "How far each policy's equity lies below its running peak.",
        ),
        _figure(
            "pnl-histogram",
            pnl_histogram(backtest),
            "trade P&L histogram",
            f"P&L of each of {name}'s {m.trades:,} trades.",
        ),
    ]
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<title>{html.escape(f"Backtest: {name} on {title}")}</title>
<style>{_STYLE}</style></head>
<body>
<h1>{html.escape(f"Backtest: {name} on {title}")}</h1>
<p>{html.escape(settings)}. Numbers in pips after the spread; definitions in docs/METRICS.md.
The 95% interval of the expectancy is a bootstrap over whole sessions (an edge only when it lies
above 0). Sharpe: mean over standard deviation of the P&amp;L of each UTC day with a session, times
&radic;{TRADING_DAYS_PER_YEAR}.</p>
<h2>Summary</h2>
{_html_table(("", name), [list(row) for row in summary_rows(m, s)], table_id="summary")}
<h2>Beside the baselines</h2>
{_html_table(COMPARISON_HEADERS, comparison_rows(backtest), table_id="comparison")}
<h2>Charts</h2>
{"".join(charts)}
<h2>Breakdowns</h2>
<div class="breakdowns">{splits}</div>
{_trades_section(backtest)}
<h2>The JSON line</h2>
<pre id="json">{html.escape(json.dumps(backtest.report, indent=2))}</pre>
</body></html>
"""


def write_html_report(backtest: Backtest, out_dir: Path) -> Path:
    """Write ``out_dir/report.html`` and return its path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / REPORT_FILE
    path.write_text(render_html(backtest), encoding="utf-8")
    return path
