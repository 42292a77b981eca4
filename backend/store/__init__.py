"""What the doors read and write, one module per concern, every statement scoped to the owner:
`tasks`, `tags`, `changes`, `idempotency`, `housekeeping`; the tables and shared SQL in
`tables`; the database layer in `database`."""
