"""What the routes (and the MCP tools) read and write, one module per concern, every query
scoped to the owner: `tasks`, `tags`, and the SQL they share in `sql`."""
