"""Request and response bodies of the admin API (pydantic), kept apart from the database tables."""
