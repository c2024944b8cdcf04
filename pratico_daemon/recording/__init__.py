"""Recording of conversation sessions (issue 8, seed 003 "Flux d'Enregistrement").

The consenting participants' audio reaches a server-side recorder peer
(`recorder`), is mixed into one Opus/Ogg file under `state_dir/recordings/`
(`mixer`), and at the session's end is uploaded through a `BlobStore`
(`blobstore`) by the uploader of `service`, which then sets the session's
`recordingUrl` and writes `session.recorded` to the conversation outbox.
See docs/recording.md.

Importing this package is free: aiortc, PyAV, numpy and boto3 (the
`recording` extra) are imported only when recording is enabled.
"""

from __future__ import annotations

from typing import Any


def create_namespace(services: Any, *, blobstore: Any = None) -> Any:
    """The `/conversation` namespace, recorded when `[recording] enabled` (a daemon product).

    Without recording it is exactly `conversation.create_namespace(services)`.
    """
    from pratico_daemon.conversation import create_namespace as conversation_namespace

    namespace = conversation_namespace(services)
    if services.config.recording.enabled:
        from pratico_daemon.recording.service import RecordingService, install

        install(namespace.service, namespace,
                RecordingService(services.config, namespace.service, blobstore=blobstore))
    return namespace
