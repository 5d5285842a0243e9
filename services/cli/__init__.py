"""The ``recsys`` command: a thin layer that wires commands to the packages; no logic lives here.

recsys data list | prepare
recsys features apply | build-lte | build-recent | build-items | build-profile | build-purchases | materialize
                | versions | status | retire | record-purchases
recsys batch basket --as-of ...
recsys demo build | serve
recsys models ... | deploy | rollback | experiments list | get | create | update | pause | resume | stop | history
"""

from __future__ import annotations

import logging
import os

import typer

from services.cli import batch as batch_cmds
from services.cli import data as data_cmds
from services.cli import demo as demo_cmds
from services.cli import evaluate as evaluate_cmds
from services.cli import experiments as experiment_cmds
from services.cli import features as feature_cmds
from services.cli import models as models_cmds
from services.cli import rollout as rollout_cmds
from services.cli import train as train_cmds

# Feast phones home unless told not to; the machine has no internet anyway.
os.environ.setdefault("FEAST_USAGE", "False")

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Recommendation platform command line.")
app.add_typer(data_cmds.app, name="data", help="Datasets in the canonical format.")
app.add_typer(feature_cmds.app, name="features", help="Versioned feature store.")
app.add_typer(train_cmds.app, name="train", help="Train a recommender family.")
app.add_typer(evaluate_cmds.app, name="evaluate", help="Evaluate recommender families on real datasets.")
app.add_typer(demo_cmds.app, name="demo", help="The embedded demo: build and serve.")
app.add_typer(models_cmds.app, name="models", help="Model registry: versions, aliases, history.")
app.add_typer(batch_cmds.app, name="batch", help="Batch scoring of every user (parquet out).")
# Purchases arriving: merged into a purchase_history version's online values (imports Feast, so a
# command and not an endpoint of the basket service: docs/basket-service.md).
feature_cmds.app.command("record-purchases")(batch_cmds.record_purchases_cmd)
app.add_typer(experiment_cmds.app, name="experiments", help="A/B experiments (the same operations as /v1/experiments).")


app.command("deploy")(rollout_cmds.deploy_cmd)
app.command("rollback")(rollout_cmds.rollback_cmd)

# `recsys register ...` is `recsys models register ...` (the issue names both spellings).
app.command("register", help="Register a model version (same as `recsys models register`).")(models_cmds.register)


def main() -> None:
    logging.basicConfig(level=os.environ.get("RECSYS_LOG_LEVEL", "INFO").upper(), format="%(levelname)s %(message)s")
    # Feast logs every registry refresh at INFO; progress here comes from our own bars.
    logging.getLogger("feast").setLevel(logging.WARNING)
    app()
