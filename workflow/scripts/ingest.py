raise NotImplementedError("placeholder: being written")
