"""Modal push pools (``modal:push``): each run is a Modal Sandbox, no worker in between.

``adapter`` holds the contract's calls; ``config`` the pool template and its pydantic
model; ``connection`` the server, token and explicit clients; ``sandbox`` the create
call (name, tags, image, resources); ``status`` the mapping of Modal's results onto the
shared phases; ``logs`` stdout and stderr with a cursor; ``errors`` Modal's exceptions.
The ``modal`` SDK is imported only inside calls, so importing this package stays cheap.
"""

from providers.modal.adapter import PROVIDER, ModalProvider, ModalSettings, console_url

__all__ = ["PROVIDER", "ModalProvider", "ModalSettings", "console_url"]
