"""The intake's XML parser against defusedxml's: the same trees and mappings, the same refusals."""
import xml.etree.ElementTree as ElementTree

import pytest
from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring

from services.intake.provider_client import file_details_xml, report_xml
from services.intake.xml_mapping import MalformedXml, element_tree, file_details_from_xml, parse_document
from tests.test_intake_service import BILLION_LAUGHS, EXTERNAL_ENTITY

DOCUMENTS = [report_xml(), file_details_xml(12, 3, "0" * 32),
             b'<report xmlns="urn:x" a="1"><b>t&amp;u<![CDATA[<c>]]></b><!-- note --><?pi x?><d/>tail</report>']


def shape(element):
    """(local tag, attributes, text, children, tail) of an element, namespaces as either parser writes them."""
    return (element.tag.rsplit("}", 1)[-1], element.attrib, element.text, [shape(child) for child in element],
            element.tail)


@pytest.mark.parametrize("document", DOCUMENTS)
def test_the_same_tree_as_defusedxml(document):
    assert shape(element_tree(document)) == shape(fromstring(document, forbid_dtd=True))


@pytest.mark.parametrize("document", [BILLION_LAUGHS, EXTERNAL_ENTITY,
                                      b'<!DOCTYPE report SYSTEM "http://example.net/x.dtd"><report/>',
                                      b'<!DOCTYPE r [<!ENTITY e SYSTEM "x" NDATA n>]><r/>'])
def test_every_document_defusedxml_refuses_is_refused(document):
    with pytest.raises(DefusedXmlException):
        fromstring(document, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    with pytest.raises(DefusedXmlException):
        element_tree(document)
    with pytest.raises(MalformedXml, match="DTDs and entities are not accepted"):
        parse_document(document, "report")


@pytest.mark.parametrize("document", [b"<report><a></report>", b"<report>&undefined;</report>", b"", b"<a/><b/>"])
def test_what_is_not_well_formed_is_refused_like_defusedxml_refuses_it(document):
    with pytest.raises(ElementTree.ParseError):
        fromstring(document, forbid_dtd=True)
    with pytest.raises(MalformedXml, match="not well-formed"):
        parse_document(document, "report")


def test_mapping_reads_the_provider_documents():
    _, _, details = file_details_from_xml(file_details_xml(12, 3, "0" * 32))
    assert details["ipCaptureEvent"]["port"] == 51234 and details["fileAnnotations"] == ["viral"]
