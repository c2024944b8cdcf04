"""Recording of conversation sessions (issue 8, seed 003 "Flux d'Enregistrement").

The consenting participants' audio reaches a server-side recorder peer
(`recorder`), is mixed into one Opus/Ogg file under `state_dir/recordings/`
(`mixer`), and at the session's end is uploaded through a `BlobStore`
(`blobstore`) by the `uploader`, which then sets the session's
`recordingUrl` and writes `session.recorded` to the conversation outbox.
"""
