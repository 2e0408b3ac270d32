//! `?wsdl` on each service: the operations and their SOAP actions
//! ([MS-WUSP] section 6 has the full schemas; these name the operations,
//! namespaces and bindings a tool needs to call them).

use super::Service;

pub fn of(service: Service) -> &'static str {
    match service {
        Service::Client => CLIENT,
        Service::SimpleAuth => SIMPLE_AUTH,
        Service::Reporting => REPORTING,
        // A directory of files: no WSDL (never reached, see `answer`).
        Service::SelfUpdate => "",
    }
}

macro_rules! wsdl {
    ($ns:expr, $name:expr, [$($op:expr),*]) => {
        concat!(
            "<?xml version=\"1.0\" encoding=\"utf-8\"?>",
            "<wsdl:definitions xmlns:wsdl=\"http://schemas.xmlsoap.org/wsdl/\" ",
            "xmlns:soap=\"http://schemas.xmlsoap.org/wsdl/soap/\" xmlns:tns=\"", $ns, "\" targetNamespace=\"", $ns, "\">",
            "<wsdl:portType name=\"", $name, "Soap\">",
            $("<wsdl:operation name=\"", $op, "\"><wsdl:input message=\"tns:", $op, "SoapIn\"/><wsdl:output message=\"tns:", $op, "SoapOut\"/></wsdl:operation>",)*
            "</wsdl:portType>",
            "<wsdl:binding name=\"", $name, "Soap\" type=\"tns:", $name, "Soap\">",
            "<soap:binding transport=\"http://schemas.xmlsoap.org/soap/http\"/>",
            $("<wsdl:operation name=\"", $op, "\"><soap:operation soapAction=\"", $ns, "/", $op, "\" style=\"document\"/>",
              "<wsdl:input><soap:body use=\"literal\"/></wsdl:input><wsdl:output><soap:body use=\"literal\"/></wsdl:output></wsdl:operation>",)*
            "</wsdl:binding>",
            "<wsdl:service name=\"", $name, "\"><wsdl:port name=\"", $name, "Soap\" binding=\"tns:", $name, "Soap\"/></wsdl:service>",
            "</wsdl:definitions>"
        )
    };
}

const CLIENT: &str = wsdl!(
    "http://www.microsoft.com/SoftwareDistribution/Server/ClientWebService",
    "Client",
    [
        "GetConfig",
        "GetCookie",
        "RegisterComputer",
        "StartCategoryScan",
        "SyncUpdates",
        "RefreshCache",
        "GetExtendedUpdateInfo",
        "GetFileLocations",
        "SyncPrinterCatalog"
    ]
);
const SIMPLE_AUTH: &str = wsdl!(
    "http://www.microsoft.com/SoftwareDistribution/Server/SimpleAuthWebService",
    "SimpleAuth",
    ["GetAuthorizationCookie"]
);
const REPORTING: &str = wsdl!(
    "http://www.microsoft.com/SoftwareDistribution",
    "ReportingWebService",
    ["ReportEventBatch"]
);
