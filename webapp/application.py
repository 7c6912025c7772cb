"""WSGI entry point: Elastic Beanstalk's Python platform and App Engine both look for ``application``.

Settings come from the environment (API_URL, USER_POOL_ID, USER_POOL_CLIENT_ID, ...); see
gemcast_web/settings.py. A missing setting stops the worker at start with every problem named.
"""

from gemcast_web import create_app

application = create_app()
