"""The controller step of the flow (see ARCHITECTURE.md, "Data flow and layout")."""
