"""``python -m tansuo.cli`` — the same as the ``tansuo`` console script."""

from tansuo.cli.main import app

app(prog_name="tansuo")
