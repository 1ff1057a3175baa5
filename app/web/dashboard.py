"""Dashboard at `/`: queue progress, throughput, workers, leaderboards, live events, sites."""

from __future__ import annotations

from app.web.pages import login_required, page_blueprint, render_page

bp = page_blueprint("dashboard", __name__)


@bp.get("/")
@login_required
def home() -> str:
    """The dashboard (a placeholder until its panels arrive). Who: logged-in people."""
    return render_page("dashboard/home.html", title="Dashboard")
