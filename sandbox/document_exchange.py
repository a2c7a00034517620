"""Placeholder: being written."""


class DocumentAxisService:
    def __init__(self, residents, runtime, truth, seed, *args, **kwargs) -> None:
        pass

    def routes(self) -> list:
        return []
