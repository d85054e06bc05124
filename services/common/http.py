"""Request bodies read within a size limit, whatever the client declares."""


class BodyTooLarge(Exception):
    def __init__(self, limit):
        super().__init__(f"request body exceeds the limit of {limit} bytes")
        self.limit = limit


async def read_body(request, limit):
    """The request body, refused (BodyTooLarge) as soon as it passes `limit` bytes, chunked or not."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(limit)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def client_address(request):
    return request.client.host if request.client else "unknown"
