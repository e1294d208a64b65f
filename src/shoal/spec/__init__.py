"""Values that cross layers (image recipes and the environments built from them): plain
dataclasses that import only the standard library and each other, so the client, the
control plane, the backends and the server can all share them without importing each
other."""
