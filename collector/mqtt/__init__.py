"""MQTT plumbing: the topic layout (``topics``) and the paho client factory (``client``).

May import configuration and paho; never a daemon.
"""
