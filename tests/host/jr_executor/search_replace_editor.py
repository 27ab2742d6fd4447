"""Stand-in of the host's jr_executor/search_replace_editor.py: one SEARCH/REPLACE edit."""

import os


class SearchReplaceEditor:
    """Replaces the one occurrence of a SEARCH text; refuses when it is absent or ambiguous."""

    def apply(self, path, search, replace):
        if not os.path.exists(path):
            return {'success': False, 'error': f'File not found: {path}'}
        with open(path) as handle:
            text = handle.read()
        count = text.count(search)
        if count == 0:
            return {'success': False, 'error': f'SEARCH text not found in {path}'}
        if count > 1:
            return {'success': False, 'error': f'SEARCH text matches {count} places in {path}'}
        with open(path, 'w') as handle:
            handle.write(text.replace(search, replace, 1))
        return {'success': True, 'path': path}
