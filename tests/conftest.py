import os, sys
sys.path.insert(0, os.path.dirname(__file__))  # tests import shared reference helpers from each other
