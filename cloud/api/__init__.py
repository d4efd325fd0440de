"""The hub's HTTP API (FastAPI): the contract the CLI and dashboards use.

``cloud.api.app.create_app`` builds the application; ``cloud.api.schemas`` holds the models it
speaks. Nothing is imported here, so the services can use the schemas without loading the routes.
"""
