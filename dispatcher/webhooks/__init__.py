"""Webhooks as objects: what a delivery must prove (``signatures``), how its body becomes
run parameters (``templating``) and the shapes on the wire (``models``). Pure modules;
the store keeps webhooks (``dispatcher/store/webhooks.py``) and
``dispatcher/operations/webhooks.py`` puts the pieces together."""
