"""The load step of the flow (see ARCHITECTURE.md, "Data flow and layout")."""
