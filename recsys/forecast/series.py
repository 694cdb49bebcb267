"""Sales series from the canonical logs: units and revenue per product per week (or day), every
unit counted, zero periods filled, with the calendar beside them.

Where the units come from:
- a raw invoice log (Online Retail's `lines.parquet`, written by the prepare stage's source): every
  product sale line, guest checkouts included (they are real demand, though they have no user for
  the recommender). A cancellation line (an invoice starting with C) is linked to the latest
  earlier sale of the same product to the same customer, and its units are taken off that sale's
  period, at most the units that sale had (the source links a cancellation to a customer and a
  product, not to an invoice). Cancellations with no such sale (a guest's, or of a sale before the
  log starts) are counted and left out.
- canonical events (the synthetic shop, `files`): each purchase is one unit at the catalog price.

A backtest never sees a cancellation before it happens: `history(origin)` adds back the units of
cancellations made at or after the origin. Refused, and counted in `report["refused"]`: sale rows with a missing quantity or one ≤ 0 (a sale
of −3 units is an adjustment, not demand). Periods: weeks start on Monday (`ds`, a naive date, UTC
days); only whole periods inside the log count (a log that starts on a Wednesday and ends on a
Friday loses its first and last partial weeks). A product's series starts at its first sale and runs
to the last whole period, zeros filled: a product has no demand before it exists.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa

from recsys.data.online_retail import PRODUCT_CODE

FREQS = {"W": 7, "D": 1}
LINE_COLUMNS = ["item_id", "timestamp", "quantity", "unit_price", "customer_id", "kind"]


def _period_start(ts: pd.Series, freq: str) -> pd.Series:
    days = ts.dt.tz_convert("UTC").dt.tz_localize(None).dt.normalize() if ts.dt.tz is not None else ts.dt.normalize()
    if freq == "D":
        return days
    return days - pd.to_timedelta(days.dt.weekday, unit="D")  # Monday


def sales_lines_from_invoice_log(lines: pa.Table | pd.DataFrame) -> pd.DataFrame:
    """Online Retail's normalised lines (recsys.data.online_retail.LINES_SCHEMA) → sale and
    cancellation lines of products (LINE_COLUMNS). Lines quarantined for other reasons (not a
    product, no description, quantity or price ≤ 0) are not sales."""
    df = lines.to_pandas() if isinstance(lines, pa.Table) else lines
    sale = df["reason"].isna() | (df["reason"] == "no_customer")
    cancel = (df["reason"] == "cancellation") & df["item_id"].str.match(PRODUCT_CODE, na=False)
    out = df.loc[sale | cancel, ["item_id", "timestamp", "quantity", "unit_price", "customer_id"]].copy()
    out["kind"] = np.where(sale[sale | cancel], "sale", "cancellation")
    out.loc[out["customer_id"] == "", "customer_id"] = None
    return out.reset_index(drop=True)


def sales_lines_from_events(events: pd.DataFrame, catalog: pd.DataFrame) -> pd.DataFrame:
    """Canonical purchase events → one unit per purchase at the catalog price (LINE_COLUMNS)."""
    bought = events[events["event_type"] == "purchase"]
    price = catalog.set_index("item_id")["price"]
    return pd.DataFrame({
        "item_id": bought["item_id"].to_numpy(), "timestamp": bought["timestamp"].to_numpy(),
        "quantity": np.ones(len(bought), dtype=np.int64),
        "unit_price": bought["item_id"].map(price).fillna(0.0).to_numpy(dtype=float),
        "customer_id": bought["user_id"].to_numpy(), "kind": "sale",
    })


@dataclass
class SalesSeries:
    """Zero-filled sales per product and period, and what went into them."""

    frame: pd.DataFrame  # unique_id, ds, y (units), revenue, orders (sale lines); one row per product and period from its first sale
    calendar: pd.DataFrame  # ds, week_of_year, holidays (public holidays in the period, holiday_country)
    freq: str
    report: dict = field(default_factory=dict)
    # unique_id, ds (the sale's period), cancelled_at (naive UTC), units taken off it, orders (1: the
    # sale was emptied): what `history` adds back for cancellations an origin could not know yet
    cancelled: pd.DataFrame | None = None

    @property
    def periods(self) -> pd.DatetimeIndex:
        return pd.DatetimeIndex(self.calendar["ds"])

    @property
    def first_sale(self) -> pd.Series:
        """product → its first period with a sale."""
        return self.frame.groupby("unique_id")["ds"].min()

    def history(self, origin: pd.Timestamp) -> pd.DataFrame:
        """Rows before `origin`, as a forecaster made at `origin` saw them: a sale cancelled only at
        or after the origin still stands (its units and its order are added back)."""
        rows = self.frame[self.frame["ds"] < origin].reset_index(drop=True)
        if self.cancelled is None or self.cancelled.empty:
            return rows
        late = self.cancelled[(self.cancelled["ds"] < origin) & (self.cancelled["cancelled_at"] >= origin)]
        if late.empty:
            return rows
        back = late.groupby(["unique_id", "ds"])[["units", "orders"]].sum()
        keyed = rows.set_index(["unique_id", "ds"])
        found = back.index.intersection(keyed.index)
        keyed.loc[found, "y"] += back.loc[found, "units"]
        keyed.loc[found, "orders"] += back.loc[found, "orders"]
        return keyed.reset_index()

    def actuals(self, origin: pd.Timestamp, horizon: int) -> pd.DataFrame:
        """Rows of the `horizon` periods from `origin`, for every product first sold before their
        end, zeros filled (a product launched within the horizon has zeros before its launch)."""
        end = origin + pd.Timedelta(days=FREQS[self.freq] * horizon)
        first = self.first_sale
        ids = first.index[first < end]
        grid = pd.MultiIndex.from_product([ids, pd.date_range(origin, end, freq=f"{FREQS[self.freq]}D", inclusive="left")],
                                          names=["unique_id", "ds"])
        window = self.frame[(self.frame["ds"] >= origin) & (self.frame["ds"] < end)].set_index(["unique_id", "ds"])
        return window[["y", "revenue", "orders"]].reindex(grid, fill_value=0.0).reset_index()

    def wide(self) -> tuple[list[str], np.ndarray]:
        """(product ids, (products, periods) units): zeros before a product's first sale too."""
        table = self.frame.pivot(index="unique_id", columns="ds", values="y").reindex(columns=self.periods)
        return list(table.index), table.fillna(0.0).to_numpy(dtype=np.float32)


def build_series(lines: pd.DataFrame, freq: str = "W", holiday_country: str | None = None) -> SalesSeries:
    """Sale and cancellation lines (LINE_COLUMNS) → SalesSeries (module docstring for the rules)."""
    if freq not in FREQS:
        raise ValueError(f"freq {freq!r}: use 'W' (weeks from Monday) or 'D' (days)")
    missing = [c for c in LINE_COLUMNS if c not in lines.columns]
    if missing:
        raise ValueError(f"sales lines lack the columns {missing}; expected {LINE_COLUMNS}")
    df = lines.copy()
    df["timestamp"] = pd.to_datetime(df["timestamp"], utc=True)
    sales, cancels = df[df["kind"] == "sale"], df[df["kind"] == "cancellation"]
    qty = pd.to_numeric(sales["quantity"], errors="coerce")
    refused = {"missing_quantity": int(qty.isna().sum()), "non_positive_quantity": int((qty <= 0).sum())}
    sales = sales[qty > 0].assign(quantity=qty[qty > 0].astype(np.int64)).reset_index(drop=True)
    if sales.empty:
        raise ValueError("no sale lines with a positive quantity: nothing to build demand series from")
    net, linked = _net_cancellations(sales, cancels)
    sales = sales.assign(net=net, period=_period_start(sales["timestamp"], freq))
    n = linked["netted"]
    cancelled = pd.DataFrame({"unique_id": sales["item_id"].to_numpy()[n["sale_row"].to_numpy(dtype=np.int64)].astype(str),
                              "ds": sales["period"].to_numpy()[n["sale_row"].to_numpy(dtype=np.int64)],
                              "cancelled_at": pd.to_datetime(n["timestamp"], utc=True).dt.tz_localize(None).to_numpy(),
                              "units": n["applied"].to_numpy(dtype=np.float64),
                              "orders": n["emptied"].to_numpy(dtype=np.float64)})

    step = pd.Timedelta(days=FREQS[freq])
    first_day = sales["timestamp"].min().tz_convert("UTC").tz_localize(None).normalize()
    last_day = sales["timestamp"].max().tz_convert("UTC").tz_localize(None).normalize()  # may be partial
    start = first_day if freq == "D" else first_day + pd.Timedelta(days=(7 - first_day.weekday()) % 7)
    periods = pd.date_range(start, last_day - step, freq=step)  # whole periods: each ends before the last day
    if len(periods) == 0:
        raise ValueError(f"the sales cover {first_day.date()}..{last_day.date()}: not one whole period of {freq}")
    inside = sales[(sales["period"] >= periods[0]) & (sales["period"] <= periods[-1])]
    grouped = inside.assign(revenue=inside["net"] * inside["unit_price"], orders=(inside["net"] > 0).astype(np.float64)) \
        .groupby(["item_id", "period"])[["net", "revenue", "orders"]].sum()
    first = grouped.reset_index().groupby("item_id")["period"].min()
    index_of = {p: i for i, p in enumerate(periods)}
    ids = np.repeat(first.index.to_numpy(), [len(periods) - index_of[p] for p in first])
    ds = np.concatenate([periods[index_of[p]:].to_numpy() for p in first]) if len(first) else np.array([], "datetime64[ns]")
    grid = pd.MultiIndex.from_arrays([ids, ds], names=["item_id", "period"])
    if grouped.empty:
        raise ValueError(f"no sale falls inside a whole period ({periods[0].date()}..{periods[-1].date()}): "
                         "nothing to build demand series from")
    filled = grouped.reindex(grid, fill_value=0.0).reset_index()
    frame = pd.DataFrame({"unique_id": filled["item_id"].astype(str), "ds": pd.to_datetime(filled["period"]),
                          "y": filled["net"].astype(np.float64), "revenue": filled["revenue"].astype(np.float64),
                          "orders": filled["orders"].astype(np.float64)})
    report = {
        "freq": freq, "products": int(frame["unique_id"].nunique()), "periods": len(periods),
        "first_period": str(periods[0].date()), "last_period": str(periods[-1].date()),
        "sale_lines": len(sales), "guest_sale_lines": int(sales["customer_id"].isna().sum()),
        "cancellation_lines": len(cancels), "cancellation_lines_linked": linked["lines"],
        "cancelled_units_netted": linked["units"], "cancellation_lines_unlinked": len(cancels) - linked["lines"],
        "sale_lines_outside_whole_periods": len(sales) - len(inside), "refused": refused,
        "units": float(frame["y"].sum()),
    }
    return SalesSeries(frame.sort_values(["unique_id", "ds"]).reset_index(drop=True),
                       calendar_of(periods, freq, holiday_country), freq, report, cancelled)


def _net_cancellations(sales: pd.DataFrame, cancels: pd.DataFrame) -> tuple[np.ndarray, dict]:
    """Units of each sale line after the cancellations linked to it (module docstring)."""
    net = sales["quantity"].to_numpy(dtype=np.float64).copy()
    known = cancels[cancels["customer_id"].notna()]
    if known.empty:
        return net, {"lines": 0, "units": 0.0, "netted": pd.DataFrame(columns=["sale_row", "timestamp", "applied", "emptied"])}
    left = known.assign(units=pd.to_numeric(known["quantity"], errors="coerce").abs()).dropna(subset=["units"])
    right = sales[sales["customer_id"].notna()].assign(sale_row=lambda d: d.index)
    left, right = left.sort_values("timestamp"), right.sort_values("timestamp")
    matched = pd.merge_asof(left, right[["timestamp", "customer_id", "item_id", "sale_row"]], on="timestamp",
                            by=["customer_id", "item_id"], direction="backward")
    matched = matched.dropna(subset=["sale_row"])
    matched = matched.assign(sale_row=matched["sale_row"].astype(np.int64)).sort_values(["sale_row", "timestamp"])
    # Each cancellation takes what its sale has left (in time order): the sale's units are the cap.
    bought = net[matched["sale_row"].to_numpy()]
    capped = np.minimum(matched.groupby("sale_row")["units"].cumsum().to_numpy(), bought)
    first = ~matched["sale_row"].duplicated().to_numpy()
    applied = capped - np.where(first, 0.0, np.roll(capped, 1))
    matched = matched.assign(applied=applied, emptied=(capped >= bought) & (applied > 0))
    taken = matched.groupby("sale_row")["applied"].sum()
    net[taken.index.to_numpy()] -= taken.to_numpy()
    netted = matched[matched["applied"] > 0][["sale_row", "timestamp", "applied", "emptied"]]
    return net, {"lines": len(matched), "units": float(taken.sum()), "netted": netted}


def calendar_of(periods: pd.DatetimeIndex, freq: str, country: str | None) -> pd.DataFrame:
    """ds, week_of_year (ISO), holidays (the country's public holidays inside each period)."""
    out = pd.DataFrame({"ds": periods, "week_of_year": periods.isocalendar().week.to_numpy(dtype=np.int64)})
    out["holidays"] = 0
    if country:
        import holidays

        days = holidays.country_holidays(country, years=range(periods[0].year, periods[-1].year + 2))
        step = FREQS[freq]
        out["holidays"] = [sum((p + pd.Timedelta(days=d)).date() in days for d in range(step)) for p in periods]
    return out


def extend_calendar(calendar: pd.DataFrame, periods: int, freq: str, country: str | None) -> pd.DataFrame:
    """The calendar with `periods` more periods after its end (the horizon of a forecast at the end)."""
    step = pd.Timedelta(days=FREQS[freq])
    more = pd.date_range(calendar["ds"].iloc[-1] + step, periods=periods, freq=step)
    return pd.concat([calendar, calendar_of(more, freq, country)], ignore_index=True)
