"""Registries: from a config section's ``name`` to the component class that owns the section.

One :class:`Registry` per kind of component (losses, query towers, candidate towers; soft-target
sources next). A component is a pydantic section class (:class:`Component`) that declares its
``name``, its keys with their defaults, and a builder that makes the runtime object. The
registry is the only place that turns a name into a class: an unknown name, or a key that the
chosen component does not read, is an error naming the component and its keys; nothing falls
back to a default component.

Adding a component = its section class (with its builder) + one ``@REGISTRY.register`` line.
No ``if name == ...`` branch anywhere else.

This module imports no TensorFlow, so configs are validated before TensorFlow loads.

Example:
    >>> from typing import Literal
    >>> LOSSES = Registry("loss")
    >>> @LOSSES.register
    ... class Hinge(Component):
    ...     name: Literal["hinge"] = "hinge"
    ...     margin: float = 1.0
    >>> LOSSES.parse({"name": "hinge", "margin": 0.5}).margin
    0.5
    >>> LOSSES.parse("hinge").margin          # a bare name: every default
    1.0
"""

from __future__ import annotations

import typing
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError


class ComponentError(ValueError):
    """A component section that does not validate; the message names the section's key path."""


class Component(BaseModel):
    """Base class of a registered component's config section.

    Subclasses declare ``name: Literal["their_name"] = "their_name"`` and their keys (with
    defaults); unknown keys are rejected. The registry reads the name from the annotation.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)

    #: overridden by every component as ``Literal["<its name>"]``; declared here so that it
    #: comes first in the section's keys and dumps
    name: str

    #: filled in by :meth:`Registry.register`: the registry this section belongs to
    registry: ClassVar["Registry | None"] = None

    @classmethod
    def component_name(cls) -> str:
        annotation = cls.model_fields["name"].annotation
        values = typing.get_args(annotation)
        if typing.get_origin(annotation) is not typing.Literal or len(values) != 1:
            raise TypeError(f"{cls.__name__}.name must be annotated Literal['<name>']; got {annotation!r}")
        return values[0]

    @classmethod
    def keys(cls) -> list[str]:
        return list(cls.model_fields)


class Registry:
    """Component sections of one kind, by name (module docstring).

    Args:
        kind: what the components are, as users read it in errors (``loss``, ``query tower``).
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._components: dict[str, type[Component]] = {}

    def register(self, component: type[Component]) -> type[Component]:
        """Class decorator: add ``component`` under its ``name`` (a duplicate name is an error)."""
        if not (isinstance(component, type) and issubclass(component, Component)):
            raise TypeError(f"a {self.kind} must be a tfsoft.registry.Component subclass; got {component!r}")
        name = component.component_name()
        if name in self._components and self._components[name] is not component:
            raise ValueError(f"{self.kind} '{name}' is already registered ({self._components[name].__name__})")
        self._components[name] = component
        component.registry = self
        return component

    def unregister(self, name: str) -> None:
        """Remove ``name`` (for tests that register throwaway components)."""
        self._components.pop(name, None)

    def names(self) -> list[str]:
        return list(self._components)

    def get(self, name: str) -> type[Component]:
        """The section class of ``name``; an unknown name is a ``ValueError`` listing the known ones."""
        try:
            return self._components[name]
        except (KeyError, TypeError):
            raise ValueError(f"unknown {self.kind} {name!r}; registered: {', '.join(self._components)}") from None

    def __contains__(self, name) -> bool:
        return name in self._components

    def section_class(self, value: Any) -> type[Component] | None:
        """The section class a raw value (name or mapping) selects, or None if it names none."""
        name = value.get("name") if isinstance(value, dict) else value
        return self._components.get(name) if isinstance(name, str) else None

    def parse(self, value: Any, where: str | None = None, default: str | None = None) -> Component:
        """A section from a bare name, a mapping with ``name``, or an already built section.

        Args:
            value: the raw section.
            where: the section's key path in the config (``loss``, ``model.query_tower``), for
                error messages.
            default: the component a mapping without ``name`` selects (None: ``name`` is required).

        Raises:
            ComponentError: unknown name, missing name, a key the component does not read, or
                a bad value; the message names the key path, the component and its keys.
        """
        prefix = f"'{where}': " if where else ""
        if isinstance(value, Component):
            if value.registry is not self:
                raise ComponentError(f"{prefix}expected a {self.kind}; got a {type(value).__name__}")
            return value
        if isinstance(value, str):
            value = {"name": value}
        if not isinstance(value, dict):
            raise ComponentError(f"{prefix}a {self.kind} is a name ({', '.join(self._components)}) or a mapping "
                                 f"with 'name'; got {value!r}")
        if "name" not in value:
            if default is None:
                raise ComponentError(f"{prefix}the {self.kind} section needs a 'name' ({', '.join(self._components)});"
                                     f" got keys {', '.join(map(str, value)) or 'none'}")
            value = {"name": default, **value}
        try:
            component = self.get(value["name"])
        except ValueError as error:
            raise ComponentError(f"{prefix}{error}") from None
        try:
            return component.model_validate(value)
        except ValidationError as error:
            raise ComponentError(self._explain(component, error, where)) from None

    def _explain(self, component: type[Component], error: ValidationError, where: str | None) -> str:
        name = component.component_name()
        problems = []
        for item in error.errors():
            key = ".".join(str(part) for part in item["loc"])
            path = f"{where}.{key}" if where else key
            if item["type"] == "extra_forbidden":
                hint = getattr(component, "moved_keys", {}).get(key)
                problems.append((f"'{where}': " if where else "") + f"key '{key}' is not read by {self.kind} "
                                f"'{name}'" + (f" ({hint})" if hint else ""))
            elif item["type"] == "literal_error":
                problems.append(f"'{path}': got {item['input']!r}; {item['msg'].lower()}")
            else:
                problems.append(f"'{path}': {item['msg']} (got {item.get('input')!r})")
        keys = ", ".join(k for k in component.keys())
        return f"{'; '.join(problems)}; {self.kind} '{name}' reads: {keys}"
