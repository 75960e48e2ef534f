"""Field tools for the technician at the gateway: ``install``, ``doctor``, the model store
(``model install/list/rollback/test``) and the systemd notification protocol the service speaks."""
