"""Search spaces shipped with adamtune (YAML files; see adamtune.space for the format)."""
