"""BLE trigger sources: authenticated sensor adverts (format v1), legacy broadcasts, and
a bleak backend on bumble for HCI controllers and virtual radios."""
