"""The public answers: one pydantic model per answer, one module per router (as
full-stack-fastapi-template keeps its public schemas apart from the database models), so
``openapi.json`` documents every answer and clients can be generated from it.

The models describe the answers the routes have always given: same field names, same order,
same values (``tests/test_api_contract.py``). A field that appears only in some states is
declared with a default and its route uses ``response_model_exclude_unset``, so it is left
out where it always was rather than sent as ``null``. Open shapes (a model's configuration,
a batch item's result) are typed as ``dict[str, Any]`` where they are open, with the reason.
"""
