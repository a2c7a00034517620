"""Placeholder: being written."""


class BusinessService:
    def __init__(self, residents, runtime, truth, seed, *args, **kwargs) -> None:
        pass

    def routes(self) -> list:
        return []
