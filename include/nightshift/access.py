"""Who may read or run each pipeline's DAG, under Airflow's FAB auth manager (the compose stack).

A pipeline YAML names team roles and what each may do with its DAG::

    access:
      fraud-analysts: read     # the DAG, its runs, task logs and its Model reports
      fraud-oncall: operate    # also trigger, clear, mark and pause it

:func:`access_control` turns that into the DAG's ``access_control``, which Airflow's
dag-processor writes to FAB's per-DAG permissions. :func:`sync_team_roles` creates every role a
pipeline names (``nightshift roles``; the compose stack's airflow-init runs it): FAB's Viewer
permissions (``read``) or User permissions (``operate``) without their reach over every DAG,
plus reading the plugin list (where the UI finds the Model reports page), so
a team member sees only the DAGs whose pipelines name the team, and the Model reports page
(which asks the auth manager per DAG) shows only those pipelines' reports.

The embedded default uses Airflow's simple auth manager, which has no roles: there ``access``
is not enforced.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from nightshift.config.pipeline import Pipeline

Level = Literal["read", "operate"]

# What each level grants on one DAG: FAB's per-DAG resources ("DAG:<id>", "DAG Run:<id>").
DAG_PERMISSIONS: dict[Level, dict[str, set[str]]] = {
    "read": {"DAGs": {"can_read"}, "DAG Runs": {"can_read"}},
    "operate": {"DAGs": {"can_read", "can_edit"}, "DAG Runs": {"can_read", "can_create"}},
}
_MENU = "menu_access"
# Airflow 3.3's UI finds the Model reports entry and the Report tab in the plugin list
# (GET /api/v2/plugins), which FAB lets only Op and Admin read: without this a team would
# not see its own reports in the UI (FAB's Viewer and User do not see them either).
PLUGIN_LIST = ("can_read", "Plugins")


def access_control(pipeline: Pipeline) -> dict[str, dict[str, set[str]]] | None:
    """Return the DAG's ``access_control`` for ``pipeline.access`` (None when it names none)."""
    if not pipeline.access:
        return None
    return {
        role: {resource: set(actions) for resource, actions in DAG_PERMISSIONS[level].items()}
        for role, level in pipeline.access.items()
    }


def team_roles(pipelines: Iterable[Pipeline]) -> dict[str, Level]:
    """Return every role the pipelines name, with the most it may do with any of them."""
    found: dict[str, Level] = {}
    for pipeline in pipelines:
        for role, level in pipeline.access.items():
            found[role] = "operate" if "operate" in (level, found.get(role)) else level
    return dict(sorted(found.items()))


def base_permissions(security_manager: Any, level: Level) -> set[tuple[str, str]]:
    """Return FAB's Viewer (read) or User (operate) permissions less those over every DAG,
    plus reading the plugin list."""
    perms = list(security_manager.VIEWER_PERMISSIONS)
    if level == "operate":
        perms += security_manager.USER_PERMISSIONS
    kept = {(action, resource) for action, resource in perms if not _all_dags(action, resource)}
    return kept | {PLUGIN_LIST}


def _all_dags(action: str, resource: str) -> bool:
    """Whether (action, resource) reaches every DAG (the menu entry alone does not)."""
    return resource == "DAGs" and action != _MENU


def sync_team_roles(pipelines: Iterable[Pipeline]) -> dict[str, Level]:
    """Create or update each team role the pipelines name; return them.

    A role gets exactly its level's base permissions on global resources; its per-DAG
    permissions are left to the dag-processor (from each DAG's ``access_control``).
    """
    from airflow.providers.fab.auth_manager.cli_commands.utils import get_application_builder

    roles = team_roles(pipelines)
    with get_application_builder() as appbuilder:
        manager = appbuilder.sm
        for name, level in roles.items():
            wanted = base_permissions(manager, level)
            manager.bulk_sync_roles([{"role": name, "perms": sorted(wanted)}])
            role = manager.find_role(name)
            for permission in list(role.permissions):
                pair = (permission.action.name, permission.resource.name)
                if pair not in wanted and not _per_dag(pair[1]):
                    manager.remove_permission_from_role(role, permission)
    return roles


def _per_dag(resource: str) -> bool:
    return resource.startswith(("DAG:", "DAG Run:"))
