"""The two model types of the churn model, and the one wrapper MLflow logs for both.

Every model is a scikit-learn-style estimator with `predict_proba` whose preprocessing
(imputation, scaling, categorical encoding) is fitted with it and pickled with it, so scoring
feeds it the day's raw feature columns and cannot skew from training. `ChurnModel` is the MLflow
pyfunc around either type: its `predict` returns the churn probability per row, whatever the
type, so scoring loads `models:/churn@champion` without knowing what won.

- `sklearn`: HistGradientBoostingClassifier behind a median imputer (with missing-value
  indicators: a missing `mean_gap_days` means "one order only") and an ordinal encoder whose
  unknown and missing codes are negative, which the trees treat as missing. Early stopping on
  the validation split.
- `lightning`: a PyTorch Lightning MLP behind imputation, a quantile-normal scaler and one-hot
  encoding; early stopping on validation loss, the best epoch's weights kept, seeded and
  deterministic on the CPU. The fitted network is stored as NumPy arrays, so unpickling the
  model does not import torch; only `predict_proba` does, and torch is never imported by the
  scikit-learn type.
"""

from __future__ import annotations

import importlib.metadata
import itertools
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from mlflow.pyfunc import PythonModel

from churnflow.errors import ConfigError, DataError
from churnflow.training_set import CUSTOMER, LABEL, SNAPSHOT, SPLIT

if TYPE_CHECKING:
    from sklearn.compose import ColumnTransformer

SKLEARN, LIGHTNING = "sklearn", "lightning"
MODEL_TYPES = (SKLEARN, LIGHTNING)
# Columns of a training example that are not model inputs: keys, the split, the label, and the
# signup date (a calendar date; tenure_days carries what it says about the customer).
NOT_FEATURES = frozenset({SPLIT, SNAPSHOT, CUSTOMER, LABEL, "signup_date", "ds"})


@dataclass(frozen=True)
class FeatureSpec:
    """Which columns a model reads, and as what: numbers as float64, the rest as strings."""

    numeric: tuple[str, ...]
    categorical: tuple[str, ...]

    @classmethod
    def of(cls, frame: pd.DataFrame) -> FeatureSpec:
        """Every column of the training set that is not a key, the split or the label."""
        numeric, categorical = [], []
        for name, dtype in frame.dtypes.items():
            if name in NOT_FEATURES:
                continue
            if pd.api.types.is_bool_dtype(dtype) or pd.api.types.is_numeric_dtype(dtype):
                numeric.append(str(name))
            elif pd.api.types.is_string_dtype(dtype) or pd.api.types.is_object_dtype(dtype):
                categorical.append(str(name))
        if not numeric:
            raise DataError(f"training set: no numeric feature columns in {list(frame.columns)}")
        return cls(tuple(numeric), tuple(categorical))

    @property
    def columns(self) -> tuple[str, ...]:
        return self.numeric + self.categorical

    def signature_example(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Rows typed as the logged signature declares them: 64-bit integer columns as long
        (counts: Spark's bigint, never null), every other number as double (MLflow converts
        int32 to double safely but refuses int64 to double), categories as strings."""
        example = frame[list(self.columns)].copy()
        for name in self.numeric:
            if example[name].dtype != "int64":
                example[name] = example[name].astype("float64")
        return example

    def inputs(self, frame: pd.DataFrame) -> pd.DataFrame:
        """The model's input frame: its columns in order, numbers as float64 (the signature
        says double, so Spark's int and long columns pass), categories as str or None."""
        missing = [name for name in self.columns if name not in frame.columns]
        if missing:
            raise DataError(
                f"model input lacks feature column(s) {', '.join(missing)} (has "
                f"{', '.join(map(str, frame.columns))})"
            )
        out = pd.DataFrame(index=frame.index)
        for name in self.numeric:
            out[name] = pd.to_numeric(frame[name], errors="raise").astype("float64")
        for name in self.categorical:
            values = frame[name].astype(object)
            out[name] = values.where(values.notna(), None).map(
                lambda v: None if v is None else str(v)
            )
        return out


@dataclass(frozen=True)
class TrainingConfig:
    """What a fit may use: the seed, and the network's epochs and batch size."""

    seed: int = 7
    max_epochs: int = 40
    patience: int = 5
    batch_size: int = 512
    learning_rate: float = 2e-3
    hidden: tuple[int, ...] = (64, 32)
    dropout: float = 0.1


@dataclass
class FitResult:
    """A fitted estimator, the parameters to log, and per-epoch curves (Lightning only)."""

    model_type: str
    estimator: Any
    params: dict[str, Any]
    history: dict[str, list[float]] = field(default_factory=dict)
    best_epoch: int | None = None


def _sklearn(
    train: pd.DataFrame, validation: pd.DataFrame, spec: FeatureSpec, config: TrainingConfig
) -> FitResult:
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OrdinalEncoder

    (x, y), (vx, vy) = _xy(train, spec), _xy(validation, spec)
    prepare = ColumnTransformer(
        [
            ("numeric", SimpleImputer(strategy="median", add_indicator=True), list(spec.numeric)),
            (
                "categorical",
                OrdinalEncoder(
                    handle_unknown="use_encoded_value", unknown_value=-1, encoded_missing_value=-1
                ),
                list(spec.categorical),
            ),
        ]
    )
    params = {
        "learning_rate": 0.06,
        "max_iter": 400,
        "max_leaf_nodes": 31,
        "min_samples_leaf": 40,
        "l2_regularization": 1.0,
        "early_stopping": True,
        "n_iter_no_change": 20,
        "random_state": config.seed,
    }
    prepare.fit(x)
    width = prepare.transform(x.head(1)).shape[1]
    categorical = np.zeros(width, dtype=bool)
    categorical[width - len(spec.categorical) :] = True
    classifier = HistGradientBoostingClassifier(categorical_features=categorical, **params)
    classifier.fit(prepare.transform(x), y, X_val=prepare.transform(vx), y_val=vy)
    pipeline = Pipeline([("prepare", prepare), ("classify", classifier)])
    return FitResult(SKLEARN, pipeline, params | {"n_iter": int(classifier.n_iter_)})


class TabularNetwork:
    """The fitted MLP: a preprocessing transformer and the network's weights as arrays.

    Pickles without torch; `predict_proba` rebuilds the network on the CPU on first use.
    """

    def __init__(self, prepare: ColumnTransformer, layers: Sequence[int], dropout: float,
                 weights: dict[str, np.ndarray]) -> None:  # fmt: skip
        self.prepare = prepare
        self.layers = tuple(layers)
        self.dropout = dropout
        self.weights = weights
        self.classes_ = np.array([0, 1])
        self._network: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "_network"} | {"_network": None}

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        import torch

        if self._network is None:
            network = build_network(self.layers, self.dropout)
            network.load_state_dict({k: torch.from_numpy(v) for k, v in self.weights.items()})
            self._network = network.eval()
        inputs = torch.from_numpy(np.asarray(self.prepare.transform(frame), dtype=np.float32))
        with torch.no_grad():
            churn = torch.sigmoid(self._network(inputs)).squeeze(1).numpy().astype("float64")
        return np.column_stack([1.0 - churn, churn])


def build_network(layers: Sequence[int], dropout: float) -> Any:
    """`layers` = (inputs, hidden..., ); one logit out."""
    from torch import nn

    blocks: list[Any] = []
    for width_in, width_out in itertools.pairwise(layers):
        blocks += [nn.Linear(width_in, width_out), nn.ReLU(), nn.Dropout(dropout)]
    blocks.append(nn.Linear(layers[-1], 1))
    return nn.Sequential(*blocks)


def _network_preprocessing(spec: FeatureSpec, rows: int, seed: int) -> ColumnTransformer:
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, QuantileTransformer

    numeric = make_pipeline(
        SimpleImputer(strategy="median", add_indicator=True),
        QuantileTransformer(
            n_quantiles=min(1000, rows), output_distribution="normal", random_state=seed
        ),
    )
    categorical = make_pipeline(
        SimpleImputer(strategy="constant", fill_value="unknown"),
        OneHotEncoder(handle_unknown="ignore", sparse_output=False),
    )
    return ColumnTransformer(
        [
            ("numeric", numeric, list(spec.numeric)),
            ("categorical", categorical, list(spec.categorical)),
        ]
    )


def _lightning(
    train: pd.DataFrame, validation: pd.DataFrame, spec: FeatureSpec, config: TrainingConfig
) -> FitResult:
    import pytorch_lightning as pl
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    (x, y), (vx, vy) = _xy(train, spec), _xy(validation, spec)
    pl.seed_everything(config.seed, workers=True, verbose=False)
    prepare = _network_preprocessing(spec, len(x), config.seed)
    train_x = torch.from_numpy(np.asarray(prepare.fit_transform(x), dtype=np.float32))
    valid_x = torch.from_numpy(np.asarray(prepare.transform(vx), dtype=np.float32))
    train_y = torch.from_numpy(y.astype(np.float32)).unsqueeze(1)
    valid_y = torch.from_numpy(vy.astype(np.float32)).unsqueeze(1)
    layers = (train_x.shape[1], *config.hidden)
    module = _module(pl, build_network(layers, config.dropout), config)
    shuffle = torch.Generator().manual_seed(config.seed)
    train = DataLoader(
        TensorDataset(train_x, train_y), batch_size=config.batch_size, shuffle=True,
        generator=shuffle,
    )  # fmt: skip
    valid = DataLoader(TensorDataset(valid_x, valid_y), batch_size=4096)
    keeper = _BestEpoch(pl)
    trainer = pl.Trainer(
        max_epochs=config.max_epochs,
        accelerator="auto",
        devices=1,
        deterministic=True,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=[
            pl.callbacks.EarlyStopping("val_loss", patience=config.patience, mode="min"),
            keeper.callback,
        ],
    )
    trainer.fit(module, train, valid)
    network = module.network.cpu()
    network.load_state_dict(keeper.best_state)
    weights = {k: v.detach().cpu().numpy().copy() for k, v in network.state_dict().items()}
    params = {
        "hidden": "x".join(map(str, config.hidden)),
        "dropout": config.dropout,
        "learning_rate": config.learning_rate,
        "batch_size": config.batch_size,
        "max_epochs": config.max_epochs,
        "patience": config.patience,
        "seed": config.seed,
        "inputs": layers[0],
        "accelerator": trainer.accelerator.__class__.__name__.removesuffix("Accelerator").lower(),
        "epochs_run": trainer.current_epoch,
    }
    return FitResult(
        LIGHTNING,
        TabularNetwork(prepare, layers, config.dropout, weights),
        params,
        history=keeper.history,
        best_epoch=keeper.best_epoch,
    )


def _module(pl: Any, network: Any, config: TrainingConfig) -> Any:
    """The LightningModule: BCE on the logit, Adam, train and validation loss per epoch."""
    import torch

    class ChurnNetwork(pl.LightningModule):  # type: ignore[misc, name-defined]
        def __init__(self) -> None:
            super().__init__()
            self.network = network
            self.loss = torch.nn.BCEWithLogitsLoss()

        def forward(self, inputs: Any) -> Any:
            return self.network(inputs)

        def training_step(self, batch: Any, _index: int) -> Any:
            inputs, target = batch
            loss = self.loss(self(inputs), target)
            self.log("train_loss", loss, on_step=False, on_epoch=True, batch_size=len(inputs))
            return loss

        def validation_step(self, batch: Any, _index: int) -> None:
            inputs, target = batch
            loss = self.loss(self(inputs), target)
            self.log("val_loss", loss, on_step=False, on_epoch=True, batch_size=len(inputs))

        def configure_optimizers(self) -> Any:
            return torch.optim.Adam(self.parameters(), lr=config.learning_rate, weight_decay=1e-5)

    return ChurnNetwork()


class _BestEpoch:
    """Per-epoch losses for MLflow, and the weights of the epoch with the lowest val_loss
    (early stopping stops `patience` epochs later; those epochs' weights are not kept)."""

    def __init__(self, pl: Any) -> None:
        keeper = self
        self.history: dict[str, list[float]] = {"train_loss": [], "val_loss": []}
        self.best_epoch: int | None = None
        self.best_state: dict[str, Any] = {}
        self._best = float("inf")

        class Callback(pl.Callback):  # type: ignore[misc, name-defined]
            def on_train_epoch_end(self, trainer: Any, module: Any) -> None:
                metrics = trainer.callback_metrics
                for name in keeper.history:
                    if name in metrics:
                        keeper.history[name].append(float(metrics[name]))
                val = float(metrics.get("val_loss", float("inf")))
                if val < keeper._best:
                    keeper._best, keeper.best_epoch = val, trainer.current_epoch
                    keeper.best_state = {
                        k: v.detach().cpu().clone() for k, v in module.network.state_dict().items()
                    }

        self.callback = Callback()


FITTERS: dict[str, Callable[..., FitResult]] = {SKLEARN: _sklearn, LIGHTNING: _lightning}


class PlattCalibrated:
    """A fitted model whose probabilities are re-mapped by a logistic fit of the label on the
    model's logit over the validation split: sigmoid(a * logit(p) + b).

    The splits are by time, so the training snapshots' churn rate is older than the
    validation snapshots'; a model fitted on the former is miscalibrated on newer days when
    the rate moves (a campaign, a season, a young lake). Re-mapping on the newest snapshots
    before the holdout keeps the ranking (a monotone map) and brings the scores back to
    probabilities, which the gate's calibration rule and every reader of the scores expect.
    """

    def __init__(self, estimator: Any, slope: float, intercept: float) -> None:
        self.estimator = estimator
        self.slope = slope
        self.intercept = intercept
        self.classes_ = np.array([0, 1])

    @classmethod
    def fitted(cls, estimator: Any, frame: pd.DataFrame, labels: np.ndarray) -> PlattCalibrated:
        from sklearn.linear_model import LogisticRegression

        logits = _logit(churn_probability(estimator, frame)).reshape(-1, 1)
        mapping = LogisticRegression(C=1e6).fit(logits, labels)
        return cls(estimator, float(mapping.coef_[0, 0]), float(mapping.intercept_[0]))

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        raw = _logit(churn_probability(self.estimator, frame))
        churn = 1.0 / (1.0 + np.exp(-(self.slope * raw + self.intercept)))
        return np.column_stack([1.0 - churn, churn])


def _logit(p: np.ndarray) -> np.ndarray:
    clipped = np.clip(p, 1e-6, 1 - 1e-6)
    return np.log(clipped / (1 - clipped))


def fit(
    model_type: str,
    train: pd.DataFrame,
    validation: pd.DataFrame,
    spec: FeatureSpec,
    config: TrainingConfig,
) -> FitResult:
    """Fit one model type on the train split, early-stopped and calibrated on the validation
    split."""
    if model_type not in FITTERS:
        raise ConfigError(f"model type {model_type!r}: expected one of {', '.join(MODEL_TYPES)}")
    result = FITTERS[model_type](train, validation, spec, config)
    calibrated = PlattCalibrated.fitted(result.estimator, *_xy(validation, spec))
    result.estimator = calibrated
    result.params |= {
        "calibration": "platt on validation",
        "calibration_slope": round(calibrated.slope, 6),
        "calibration_intercept": round(calibrated.intercept, 6),
    }
    return result


def _xy(frame: pd.DataFrame, spec: FeatureSpec) -> tuple[pd.DataFrame, np.ndarray]:
    return spec.inputs(frame), frame[LABEL].to_numpy()


def churn_probability(estimator: Any, frame: pd.DataFrame) -> np.ndarray:
    """Column 1 of `predict_proba`: the probability of `churned = 1`."""
    return np.asarray(estimator.predict_proba(frame))[:, 1].astype("float64")


def requirements(model_type: str) -> list[str]:
    """Pinned requirements of the logged model (passed to MLflow: inferring them runs a
    subprocess for ~10 s per model). The `churnflow` package itself is in every image."""
    names = ["mlflow", "scikit-learn", "pandas", "numpy", "cloudpickle"]
    if model_type == LIGHTNING:
        names.append("torch")
    return [f"{name}=={importlib.metadata.version(name)}" for name in names]


# MLflow advises type hints on predict when a PythonModel subclass is defined, under its own
# `simplefilter("once")`, so no filter silences it: the definition records its warnings
# instead. The logged signature is the contract (see predict); the advice was noise in every
# step's log and the demo's summary.
with warnings.catch_warnings(record=True):

    class ChurnModel(PythonModel):
        """The logged pyfunc: the day's raw feature columns in, the churn probability out."""

        def __init__(self, estimator: Any, spec: FeatureSpec, model_type: str) -> None:
            self.estimator = estimator
            self.spec = spec
            self.model_type = model_type

        # No type hints on predict's arguments: MLflow 3 would derive and enforce a schema from
        # them; the logged signature is the contract.
        def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]
            return churn_probability(self.estimator, self.spec.inputs(model_input))
