"""Calibration of the ad pCTR model: an auction multiplies pCTR by a bid, so the probability itself
must be right, not only its order. Fitted on the valid day's impressions after training (isotonic
regression or Platt scaling, scikit-learn's), saved in the model export's recsys.json and applied
by every replica as a monotone map of the model's probability."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

EPS = 1e-5  # calibrated probabilities stay in [EPS, 1 − EPS]: a bin without clicks is not a certainty


@dataclass(frozen=True)
class Calibrator:
    method: str  # "isotonic" | "platt" | "identity"
    x: tuple[float, ...] = ()  # isotonic: the fitted step function's knots (model probability → calibrated)
    y: tuple[float, ...] = ()
    a: float = 1.0  # platt: sigmoid(a · logit(p) + b)
    b: float = 0.0

    @classmethod
    def fit(cls, probs: np.ndarray, labels: np.ndarray, method: str) -> Calibrator:
        p = np.clip(np.asarray(probs, dtype=np.float64), EPS, 1 - EPS)
        y = np.asarray(labels, dtype=np.float64)
        if len(np.unique(y)) < 2:
            raise ValueError(f"calibration needs clicks and non-clicks on the valid split; got {len(y)} impressions "
                             f"with click rate {y.mean() if len(y) else float('nan'):.4f}: log more ad traffic")
        if method == "isotonic":
            from sklearn.isotonic import IsotonicRegression

            fitted = IsotonicRegression(out_of_bounds="clip", y_min=EPS, y_max=1 - EPS).fit(p, y)
            return cls("isotonic", tuple(map(float, fitted.X_thresholds_)), tuple(map(float, fitted.y_thresholds_)))
        if method == "platt":
            from sklearn.linear_model import LogisticRegression

            z = np.log(p / (1 - p))[:, None]
            fitted = LogisticRegression(C=1e6).fit(z, y)
            return cls("platt", a=float(fitted.coef_[0, 0]), b=float(fitted.intercept_[0]))
        raise ValueError(f"unknown calibration {method!r}; use isotonic or platt (ads.calibration)")

    def __call__(self, probs) -> np.ndarray:
        p = np.clip(np.asarray(probs, dtype=np.float64), EPS, 1 - EPS)
        if self.method == "isotonic":
            out = np.interp(p, self.x, self.y)  # sklearn's isotonic predict: linear between knots, clipped outside
        elif self.method == "platt":
            out = 1.0 / (1.0 + np.exp(-(self.a * np.log(p / (1 - p)) + self.b)))
        else:
            out = p
        return np.clip(out, EPS, 1 - EPS)

    def to_dict(self) -> dict:
        return {"method": self.method, "x": list(self.x), "y": list(self.y), "a": self.a, "b": self.b}

    @classmethod
    def from_dict(cls, d: dict) -> Calibrator:
        return cls(d["method"], tuple(d.get("x", ())), tuple(d.get("y", ())), d.get("a", 1.0), d.get("b", 0.0))
