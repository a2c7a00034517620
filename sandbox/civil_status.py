"""Placeholder: being written."""


class CivilStatusService:
    def __init__(self, residents, runtime, truth, seed, *args, **kwargs) -> None:
        pass

    def routes(self) -> list:
        return []
