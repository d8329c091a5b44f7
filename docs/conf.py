"""Sphinx configuration of the phi_hig documentation: `bash scripts/docs.sh` builds it into site/.

The build is strict (scripts/docs.sh runs sphinx-build with -W --keep-going -n): a warning of any kind, an
unresolved reference to a phi_hig name, a public name without a docstring or a notebook cell that raises stops
it. Tutorials run at the size PHI_HIG_TUTORIAL_SIZE selects ('full' by default, 'tiny' in the test suite).
"""
import atexit
import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # phi_hig_sphinx
import phi_hig  # noqa: E402

project = 'phi_hig'
author = 'phi_hig maintainers'
copyright = 'phi_hig maintainers, MIT license'
release = version = phi_hig.__version__

extensions = ['myst_nb', 'sphinx.ext.autodoc', 'sphinx.ext.napoleon', 'phi_hig_sphinx']
exclude_patterns = ['_build', '_generated', 'reproduction.json', 'Thumbs.db', '.DS_Store']  # _generated: figures (git-ignored)
source_suffix = {'.md': 'myst-nb', '.ipynb': 'myst-nb'}
root_doc = 'index'
default_role = 'code'  # docstrings write `name` for code, as in Markdown
nitpicky = False       # others' names stay plain text; phi_hig_sphinx makes unresolved phi_hig references errors
suppress_warnings = []

# docstrings: Google style (the house rule), signatures as written
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
autodoc_member_order = 'bysource'
autodoc_typehints = 'signature'
autodoc_preserve_defaults = True
autodoc_default_options = {'members': True, 'show-inheritance': False}
add_module_names = True
python_display_short_literal_types = True

# Markdown pages and notebooks
myst_enable_extensions = ['colon_fence', 'dollarmath', 'attrs_inline', 'deflist']
myst_heading_anchors = 3
nb_execution_mode = 'force'           # every build runs the tutorials: their output is always today's
nb_execution_raise_on_error = False   # a cell that raises is a warning with its traceback; -W stops the build
nb_execution_show_tb = True
nb_execution_timeout = 600
nb_merge_streams = True
# The tutorials' kernel reads its IPython configuration from a folder of this build: it logs errors only (ipykernel
# warns on stderr that its local TCP sockets are unencrypted), and leaves no history in the user's ~/.ipython.
_ipython = tempfile.mkdtemp(prefix='phi_hig_docs_ipython_')
os.makedirs(os.path.join(_ipython, 'profile_default'))
with open(os.path.join(_ipython, 'profile_default', 'ipython_kernel_config.py'), 'w') as _f:
    _f.write("c.IPKernelApp.log_level = 'ERROR'\nc.HistoryManager.enabled = False\n")
os.environ['IPYTHONDIR'] = _ipython
atexit.register(shutil.rmtree, _ipython, True)

# the generated pages (phi_hig_sphinx)
phi_hig_cli = 'phi_hig.__main__:parser'
phi_hig_reproduction = 'reproduction.json'
phi_hig_api = {
    'api/phi_hig': ('phi_hig', ['phi_hig'],
                    'Every public name of `phi_hig` (`phi_hig.__all__`), generated from the docstrings.'),
    'api/physics': ('phi_hig.physics', ['phi_hig.physics', 'phi_hig.physics.poisson', 'phi_hig.physics.heat',
                                        'phi_hig.physics.fluid'],
                    'The forward and inverse solvers per PDE, generated from the docstrings.'),
    'api/inverses': ('phi_hig.inverses', ['phi_hig.inverses'],
                     'Generic inverse solvers for SIP (`phi_hig.inverses` is `phi_hig.sip.inverses`), generated '
                     'from the docstrings.'),
}

html_theme = 'pydata_sphinx_theme'
html_title = 'phi_hig'
html_theme_options = {
    'navbar_align': 'left',
    'header_links_before_dropdown': 6,
    'show_toc_level': 2,
    'secondary_sidebar_items': ['page-toc'],
    'footer_start': ['copyright'],
    'footer_end': [],
}
html_static_path = ['_static']
html_css_files = ['phi_hig.css']
html_sidebars = {'**': []}  # the navigation bar holds every page; the text gets the width
html_show_sourcelink = False
