"""What every handler shares: the application state (`appkeys`, the one typed home of
the objects the app builds), authentication and rate limits (`auth`), where a request
comes from (`origins`), query parameters (`params`), bodies (`bodies`), answers
(`responses`, `listing` for pages, `downloads` for files), the error middleware, the
HTTP parser's refusals (`protocol`) and WebSocket frame checks (`ws_frames`).

Imports: every domain package (`service.core` … `service.statistics`), never `service.api`.
"""
