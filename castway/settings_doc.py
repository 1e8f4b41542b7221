"""The README's settings table, rendered from :class:`castway.settings.Settings`.

``python -m castway.settings_doc`` prints it; ``tests/castway/test_settings.py`` checks
that the README carries exactly this table.
"""

from __future__ import annotations

from castway.settings import Settings


def settings_table() -> str:
    rows = ["| Variable | Default | Meaning |", "|---|---|---|"]
    for name, field in Settings.model_fields.items():
        default = field.default
        shown = "—" if default is None else f"`{getattr(default, 'value', default)}`"
        rows.append(f"| `CASTWAY_{name.upper()}` | {shown} | {field.description or ''} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(settings_table())
