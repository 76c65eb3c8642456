"""The supervisors' dashboard: live alerts and station status, acknowledgements, traceability.

- :mod:`.app`: the application, its MQTT client and acknowledging (``collector dashboard``)
- :mod:`.handlers`: the HTTP routes and pages (templates in ``collector/templates/dashboard/``)
- :mod:`.auth`: sign-in, sessions, roles, CSRF; :mod:`.throttle`: slowing password guessers
- :mod:`.live`: the live state (alerts, stations, shift counts) and its event hub
- :mod:`.shifts`: which shift a moment falls in
- :mod:`.records`: the record format and the evidence tools: the only module touching them

May import configuration, web and MQTT plumbing, the stores, people (users and passwords) and
the evidence tools (trace, reports, exports); never the gateway or the recorder.
"""
