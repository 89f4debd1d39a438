"""dispatch-admin: the admin HTTP API, the web dashboard and ``dispatch serve``."""
